"""The ledger's tables: accounts, transactions (posted, holds and their resolutions), entries, balances.

Nothing here is ever updated or deleted except `ledger_balances`, a cache of the accounts that must never go
below zero, kept so that a posting can lock one row per account and check the limit without summing history.
A hold is a `pending` transaction; its resolution is a new transaction (`posted`, `voided` or `expired`) whose
`resolves_hold_id` is UNIQUE, so the database itself refuses a second resolution. On PostgreSQL, migration
0002 adds triggers that refuse UPDATE/DELETE of accounts, transactions and entries, and a deferred constraint
trigger that refuses, at commit, a transaction whose entries do not balance per currency.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from payments.db import JSONType, PaymentsBase, UTCDateTime, utcnow

#: Ledger ids grow with every posting: 64-bit on PostgreSQL; SQLite's rowid is already 64-bit and only a
#: column declared exactly INTEGER PRIMARY KEY autoincrements, hence the variant.
LedgerId = BigInteger().with_variant(Integer(), "sqlite")


class AccountKind(enum.StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"
    EQUITY = "equity"


class Direction(enum.StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class TransactionStatus(enum.StrEnum):
    #: an ordinary transaction, or the posting of a hold: its entries count in posted balances
    POSTED = "posted"
    #: a hold: its entries count as pending until a resolution exists
    PENDING = "pending"
    #: resolutions that release a hold and carry no entries
    VOIDED = "voided"
    EXPIRED = "expired"


#: Assets and expenses grow with debits; liabilities, revenue and equity grow with credits.
NORMAL_BALANCE: dict[AccountKind, Direction] = {
    AccountKind.ASSET: Direction.DEBIT,
    AccountKind.EXPENSE: Direction.DEBIT,
    AccountKind.LIABILITY: Direction.CREDIT,
    AccountKind.REVENUE: Direction.CREDIT,
    AccountKind.EQUITY: Direction.CREDIT,
}


class Account(PaymentsBase):
    """One account in one currency, such as `project:3:budget` in EUR."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("code", "currency"),
        # the target of the entries' (account_id, currency) foreign key: an entry's currency is its account's
        UniqueConstraint("id", "currency"),
        CheckConstraint("kind IN ('asset', 'liability', 'revenue', 'expense', 'equity')", name="kind_known"),
        CheckConstraint(
            "(kind IN ('asset', 'expense') AND normal_balance = 'debit') "
            "OR (kind IN ('liability', 'revenue', 'equity') AND normal_balance = 'credit')",
            name="normal_balance_follows_kind",
        ),
        CheckConstraint("length(currency) = 3 AND upper(currency) = currency", name="currency_iso"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(20))
    normal_balance: Mapped[str] = mapped_column(String(6))
    #: the balance, less pending movements against it, must never go below zero (budgets, payables)
    no_overdraft: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    cached_balance: Mapped[AccountBalance | None] = relationship(back_populates="account")

    def __repr__(self) -> str:
        return f"<Account {self.id} {self.code} {self.currency}>"


class AccountBalance(PaymentsBase):
    """The cached balance of a no-overdraft account: the row a posting locks, checked against entries.

    Amounts are signed in the account's normal direction: for a credit-normal budget, `posted_minor` is
    credits minus debits, `pending_out_minor` the pending debits and `pending_in_minor` the pending credits.
    """

    __tablename__ = "ledger_balances"
    __table_args__ = (
        CheckConstraint("pending_out_minor >= 0", name="pending_out_non_negative"),
        CheckConstraint("pending_in_minor >= 0", name="pending_in_non_negative"),
        # the rule itself, held by the database as a last line behind the service's check under lock
        CheckConstraint("posted_minor - pending_out_minor >= 0", name="no_overdraft"),
    )

    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), primary_key=True)
    posted_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_out_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_in_minor: Mapped[int] = mapped_column(BigInteger, default=0)

    account: Mapped[Account] = relationship(back_populates="cached_balance")


class LedgerTransaction(PaymentsBase):
    """A balanced set of entries, a hold (pending), or a hold's single resolution."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        CheckConstraint("status IN ('posted', 'pending', 'voided', 'expired')", name="status_known"),
        CheckConstraint(
            "(status = 'pending' AND resolves_hold_id IS NULL) "
            "OR status = 'posted' "
            "OR (status IN ('voided', 'expired') AND resolves_hold_id IS NOT NULL)",
            name="resolution_shape",
        ),
        CheckConstraint("expires_at IS NULL OR status = 'pending'", name="only_holds_expire"),
        CheckConstraint("resolves_hold_id IS NULL OR resolves_hold_id <> id", name="not_self_resolving"),
        Index("ix_ledger_transactions_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    reference: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(10))
    #: set on a hold's posting, voiding or expiry; UNIQUE: a hold is resolved at most once
    resolves_hold_id: Mapped[int | None] = mapped_column(
        LedgerId, ForeignKey("ledger_transactions.id"), unique=True
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: SHA-256 of the request's content: the same key with other content is refused, not silently reused
    content_hash: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    entries: Mapped[list[LedgerEntry]] = relationship(back_populates="transaction", order_by="LedgerEntry.id")

    @property
    def is_hold(self) -> bool:
        """A pending transaction, whether or not it has been resolved since."""
        return self.status == TransactionStatus.PENDING

    def __repr__(self) -> str:
        return f"<LedgerTransaction {self.id} {self.status} {self.kind} {self.idempotency_key!r}>"


class LedgerEntry(PaymentsBase):
    """One debit or credit of a positive amount to one account."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        ForeignKeyConstraint(["account_id", "currency"], ["ledger_accounts.id", "ledger_accounts.currency"]),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("direction IN ('debit', 'credit')", name="direction_known"),
        Index("ix_ledger_entries_account_id_transaction_id", "account_id", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(LedgerId, ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    direction: Mapped[str] = mapped_column(String(6))
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="entries")
    account: Mapped[Account] = relationship(
        foreign_keys=[account_id], primaryjoin="LedgerEntry.account_id == Account.id", viewonly=True
    )

    def __repr__(self) -> str:
        return (
            f"<LedgerEntry {self.direction} {self.amount_minor} {self.currency} → account {self.account_id}>"
        )
