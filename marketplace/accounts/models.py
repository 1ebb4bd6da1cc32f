"""Organisations (tenants), users, memberships with roles, and API tokens."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.db import Base, intpk, timestamp


class OrgRole(enum.StrEnum):
    """What a member may do inside one client organisation."""

    ADMIN = "admin"
    MANAGER = "manager"
    REVIEWER = "reviewer"
    FINANCE = "finance"


class PlatformRole(enum.StrEnum):
    """Staff of the platform itself: admins manage skills and users, finance runs payouts and reconciliation."""

    ADMIN = "admin"
    FINANCE = "finance"


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[timestamp]

    memberships: Mapped[list[Membership]] = relationship(back_populates="organisation")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("platform_role IN ('admin', 'finance')", name="platform_role_known"),)

    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    platform_role: Mapped[str | None] = mapped_column(String(20))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[timestamp]

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")

    # Flask-Login's user protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("user_id", "organisation_id"),
        CheckConstraint("role IN ('admin', 'manager', 'reviewer', 'finance')", name="role_known"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[timestamp]

    user: Mapped[User] = relationship(back_populates="memberships")
    organisation: Mapped[Organisation] = relationship(back_populates="memberships")


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[timestamp]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")
