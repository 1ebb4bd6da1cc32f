"""Bonuses: money a project pays an annotator on top of their labels' pay, recorded beside its ledger posting."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, currency_code, intpk, money_minor, timestamp


class Bonus(Base):
    """One bonus: who gave it, to whom, why, and the ledger transaction that paid it (budget → payable + fee).

    The client's key is unique per project, so a retried request pays once; the ledger's own idempotency key
    (`project:{id}:bonus:{key}`) says the same in the bank. Rows are never updated: a bonus cannot be taken back.
    """

    __tablename__ = "bonuses"
    __table_args__ = (
        UniqueConstraint("project_id", "client_key"),
        CheckConstraint("amount_minor > 0 AND fee_minor >= 0", name="amounts_valid"),
        Index("ix_bonuses_annotator", "annotator_id", "id"),
    )

    id: Mapped[intpk]
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator_profiles.id"))
    #: what the annotator receives
    amount_minor: Mapped[money_minor]
    #: the platform's fee on it, paid by the budget on top
    fee_minor: Mapped[money_minor]
    currency: Mapped[currency_code]
    #: shown to the annotator: required, as a rejection's reason is
    reason: Mapped[str] = mapped_column(String(1000))
    client_key: Mapped[str] = mapped_column(String(120))
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: the posted ledger transaction
    transaction_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[timestamp]
