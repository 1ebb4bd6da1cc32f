"""Users, organisations, memberships and API tokens. Services flush; the caller commits."""

from __future__ import annotations

import functools
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from marketplace.accounts.models import ApiToken, Membership, Organisation, OrgRole, PlatformRole, User
from marketplace.accounts.security import hash_password, hash_token, new_token, verify_password
from marketplace.annotators.models import AnnotatorProfile
from marketplace.db import utcnow
from marketplace.errors import Conflict, InvalidInput, NotFound, Unauthorized

#: a token's last use is written at most this often, so that reads stay reads
TOKEN_TOUCH_INTERVAL = timedelta(minutes=5)


def normalise_email(email: str) -> str:
    """Emails compare case-insensitively."""
    return email.strip().lower()


def create_user(
    session: Session, *, email: str, name: str, password: str, platform_role: str | None = None
) -> User:
    """A new user; the email must be free."""
    email = normalise_email(email)
    if len(password) < 8:
        raise InvalidInput("The password must have at least 8 characters.", details={"password": "too short"})
    if platform_role is not None and platform_role not in {r.value for r in PlatformRole}:
        raise InvalidInput(f"Unknown platform role {platform_role!r}.")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("A user with this email already exists.", code="email_taken")
    user = User(email=email, name=name, password_hash=hash_password(password), platform_role=platform_role)
    session.add(user)
    session.flush()  # generate user.id
    return user


def create_organisation(session: Session, *, name: str, slug: str) -> Organisation:
    """A new client organisation (tenant)."""
    if session.scalar(select(Organisation.id).where(Organisation.slug == slug)) is not None:
        raise Conflict(f"An organisation with slug {slug!r} exists.", code="slug_taken")
    org = Organisation(name=name, slug=slug)
    session.add(org)
    session.flush()  # generate org.id
    return org


def add_membership(session: Session, *, user: User, organisation: Organisation, role: str) -> Membership:
    """Make `user` a member of `organisation` with `role`."""
    if role not in {r.value for r in OrgRole}:
        raise InvalidInput(f"Unknown role {role!r}; expected one of {', '.join(r.value for r in OrgRole)}.")
    membership = Membership(user_id=user.id, organisation_id=organisation.id, role=role)
    session.add(membership)
    session.flush()
    return membership


@functools.cache
def _unknown_user_hash() -> str:
    """A hash of no one's password, checked when the email is unknown (made once per process, when first needed)."""
    return hash_password(secrets.token_urlsafe(16))


def authenticate(session: Session, *, email: str, password: str) -> User:
    """The active user with these credentials, or Unauthorized (one message for both wrong email and password)."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    # An unknown email costs the same hash as a wrong password: the answer's timing does not tell who has an account.
    password_hash = user.password_hash if user is not None else _unknown_user_hash()
    if not verify_password(password_hash, password) or user is None or not user.is_active:
        raise Unauthorized("Wrong email or password.", code="bad_credentials")
    return user


def issue_token(session: Session, *, user: User, name: str = "api") -> tuple[ApiToken, str]:
    """A new API token for `user`: the row and the secret, which is never stored and shown only now."""
    secret = new_token()
    token = ApiToken(user_id=user.id, name=name, token_hash=hash_token(secret), prefix=secret[:10])
    session.add(token)
    session.flush()  # generate token.id
    return token, secret


#: the caller of an API request: one query, built once (it runs on every API request)
_CALLER = (
    select(User, ApiToken, AnnotatorProfile)
    .join(ApiToken, ApiToken.user_id == User.id)
    .outerjoin(AnnotatorProfile, AnnotatorProfile.user_id == User.id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        User.is_active.is_(True),
    )
)


def caller_for_token(session: Session, *, secret: str) -> tuple[User, AnnotatorProfile | None] | None:
    """The active user owning an unrevoked token, with their annotator profile if they have one, or None.

    One query: this runs on every API request, and most requests to the work loop need the profile next.
    """
    row = session.execute(_CALLER, {"token_hash": hash_token(secret)}).first()
    if row is None:
        return None
    user, token, profile = row
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        token.last_used_at = now
    return user, profile


def revoke_token(session: Session, *, user: User, token_id: int) -> ApiToken:
    """Revoke one of `user`'s tokens (someone else's token is not found)."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


def membership_of(session: Session, *, user: User, organisation_id: int) -> Membership | None:
    """The user's membership in an organisation, if any."""
    return session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.organisation_id == organisation_id)
    )
