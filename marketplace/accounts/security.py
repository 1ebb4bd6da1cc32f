"""Password hashing (argon2) and API token generation and hashing."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def set_password_hasher(hasher: PasswordHasher) -> None:
    """Replace the argon2 parameters (the test suite uses cheap ones; production keeps the library's defaults)."""
    global _hasher  # noqa: PLW0603  (one hasher per process, chosen at start-up)
    _hasher = hasher


TOKEN_PREFIX = "lf_"  # noqa: S105  (a public prefix, not a secret)


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if `password` matches the stored hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A fresh bearer token (shown to its owner once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens carry 256 bits of entropy, so a fast hash is enough to make a stolen table useless; argon2 here
    # would cost every API request tens of milliseconds.
    return hashlib.sha256(token.encode()).hexdigest()
