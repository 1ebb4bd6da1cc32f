"""The payout tables: payees' gateway accounts, payout runs, payouts and their reversals, Stripe events, the
connected accounts' bank payouts, and fundings asked of Stripe.

A payout row is the durable half of every call to the gateway: its idempotency key and transfer group are
written (and committed) before the call, its `version` fences out a worker whose claim has been taken over,
and the ids of the ledger transactions it caused are kept on it for reconciliation. See `payments.payouts`
for the state machine and docs/payments.md for the entries of each state.
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
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from payments.db import JSONType, PaymentsBase, UTCDateTime, utcnow
from payments.models import LedgerId


class PayoutState(enum.StrEnum):
    """Where a payout is; see `payments.payouts` for the transitions."""

    #: the row and its ledger hold exist; the gateway has not been called
    REQUESTED = "requested"
    #: claimed by a worker; the gateway may have been called; retried with the same key until resolved
    SUBMITTING = "submitting"
    #: unresolved for too long to trust the gateway's idempotency memory: looked up, never re-posted
    NEEDS_LOOKUP = "needs_lookup"
    #: the gateway holds the transfer; the hold is posted
    SETTLED = "settled"
    #: the gateway refused or never received it; the hold is voided and the money is payable again
    FAILED = "failed"
    #: the whole transfer was taken back; the money is payable again
    REVERSED = "reversed"


#: states from which the gateway may still be called or looked up: at most one per payee and currency
OPEN_STATES = (PayoutState.REQUESTED, PayoutState.SUBMITTING, PayoutState.NEEDS_LOOKUP)
_OPEN_SQL = "state IN ('requested', 'submitting', 'needs_lookup')"
_STATES_SQL = ", ".join(f"'{s.value}'" for s in PayoutState)


class PayoutAccount(PaymentsBase):
    """A payee's account at the payout gateway (a Stripe connected account), one per payee."""

    __tablename__ = "payout_accounts"
    __table_args__ = (
        CheckConstraint("length(currency) = 3 AND upper(currency) = currency", name="currency_iso"),
        CheckConstraint("length(country) = 2 AND upper(country) = country", name="country_iso"),
        CheckConstraint("gateway IN ('local', 'stripe')", name="gateway_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the payee, as the rest of the product names it: `annotator:17`
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    gateway: Mapped[str] = mapped_column(String(20))
    gateway_account_id: Mapped[str] = mapped_column(String(100), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[str] = mapped_column(String(3))
    payouts_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    details_submitted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class PayoutRun(PaymentsBase):
    """One pass over the payable balances: who asked, with which threshold, and what it requested."""

    __tablename__ = "payout_runs"
    __table_args__ = (
        CheckConstraint("min_amount_minor > 0", name="min_amount_positive"),
        CheckConstraint("payouts_requested >= 0", name="count_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    min_amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    payouts_requested: Mapped[int] = mapped_column(Integer, default=0)
    #: per currency: {"EUR": {"count": 3, "amount_minor": 4500}}
    totals: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    payouts: Mapped[list[Payout]] = relationship(back_populates="run")


class Payout(PaymentsBase):
    """Money owed to one payee, on its way to their gateway account."""

    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("length(currency) = 3 AND upper(currency) = currency", name="currency_iso"),
        CheckConstraint(f"state IN ({_STATES_SQL})", name="state_known"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint(
            "amount_reversed_minor >= 0 AND amount_reversed_minor <= amount_minor",
            name="reversed_within_amount",
        ),
        # the key and group are written in the transaction that creates the row, before any call
        CheckConstraint(
            "state = 'requested' OR (idempotency_key IS NOT NULL AND transfer_group IS NOT NULL)",
            name="key_before_call",
        ),
        CheckConstraint(
            "state NOT IN ('settled', 'reversed') OR (transfer_id IS NOT NULL AND settle_transaction_id IS NOT NULL)",
            name="settled_has_transfer",
        ),
        CheckConstraint(
            "state <> 'reversed' OR amount_reversed_minor = amount_minor", name="reversed_in_full"
        ),
        # one open payout per payee and currency: two runs at once cannot both hold the same balance
        Index(
            "uq_payouts_open_payee",
            "payee_reference",
            "currency",
            unique=True,
            postgresql_where=text(_OPEN_SQL),
            sqlite_where=text(_OPEN_SQL),
        ),
        Index("ix_payouts_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("payout_runs.id"), index=True)
    payee_reference: Mapped[str] = mapped_column(String(200), index=True)
    payout_account_id: Mapped[int] = mapped_column(ForeignKey("payout_accounts.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(20))
    #: the gateway account the money goes to, as it was when the payout was requested
    destination: Mapped[str] = mapped_column(String(100))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(20), default=PayoutState.REQUESTED.value)
    #: fencing token: every claim and transition increments it; a write with an older version is refused
    version: Mapped[int] = mapped_column(Integer, default=1)
    #: `payout:{id}:transfer:v1`, sent with every call for this payout
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    #: `payout:{id}`: how the transfer is found when the outcome of a call is unknown
    transfer_group: Mapped[str | None] = mapped_column(String(200), unique=True)
    transfer_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    balance_transaction_id: Mapped[str | None] = mapped_column(String(100))
    amount_reversed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    #: ledger: the hold (payable → clearing), its posting, and the clearing → gateway balance transaction
    hold_id: Mapped[int | None] = mapped_column(LedgerId, ForeignKey("ledger_transactions.id"))
    settle_transaction_id: Mapped[int | None] = mapped_column(LedgerId, ForeignKey("ledger_transactions.id"))
    balance_ledger_transaction_id: Mapped[int | None] = mapped_column(
        LedgerId, ForeignKey("ledger_transactions.id")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    #: while submitting: the claim's lease ends here; nobody else calls the gateway for it before
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_code: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    #: first claimed for submission: the clock for "unresolved for too long"
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    run: Mapped[PayoutRun | None] = relationship(back_populates="payouts")
    account: Mapped[PayoutAccount] = relationship()
    reversals: Mapped[list[PayoutReversal]] = relationship(
        back_populates="payout", order_by="PayoutReversal.id", lazy="selectin"
    )

    def __repr__(self) -> str:
        return f"<Payout {self.id} {self.state} {self.amount_minor} {self.currency} → {self.payee_reference}>"


class PayoutReversal(PaymentsBase):
    """Part of a payout taken back at the gateway, booked back to the payee's payable account."""

    __tablename__ = "payout_reversals"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payout_id: Mapped[int] = mapped_column(ForeignKey("payouts.id"), index=True)
    gateway_reversal_id: Mapped[str] = mapped_column(String(100), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    ledger_transaction_id: Mapped[int] = mapped_column(LedgerId, ForeignKey("ledger_transactions.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    payout: Mapped[Payout] = relationship(back_populates="reversals")


class EventStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"


class StripeEvent(PaymentsBase):
    """A verified webhook event, stored once by its id before anything is done with it."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'processed', 'ignored')", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_stripe_events_status_received_at", "status", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    #: the connected account the event happened on, for Connect events
    account: Mapped[str | None] = mapped_column(String(100))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    api_version: Mapped[str | None] = mapped_column(String(50))
    #: when Stripe created the event (not when it reached us)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(20), default=EventStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StripeBankPayout(PaymentsBase):
    """A connected account's payout to its bank, as the `payout.*` events report it (failed beats paid)."""

    __tablename__ = "stripe_bank_payouts"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
        CheckConstraint(
            "status IN ('pending', 'in_transit', 'paid', 'failed', 'canceled')", name="status_known"
        ),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    account: Mapped[str] = mapped_column(String(100), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    failure_code: Mapped[str | None] = mapped_column(String(100))
    arrival_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class StripeFunding(PaymentsBase):
    """Money asked of a client through Stripe (a PaymentIntent) for `reference`, credited once Stripe confirms."""

    __tablename__ = "stripe_fundings"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("status IN ('requested', 'succeeded', 'failed')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(200), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    gateway_id: Mapped[str] = mapped_column(String(100), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default="requested")
    settlement_transaction_id: Mapped[int | None] = mapped_column(
        LedgerId, ForeignKey("ledger_transactions.id")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
