"""What the payout code needs from a money-moving provider, as plain frozen values and one `Protocol`.

The payout, webhook and reconciliation services speak only these types; `payments.gateways.stripe` maps them
to Stripe's API and `payments.gateways.local` implements them without any network for the embedded default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from payments.money import Money


@dataclass(frozen=True)
class ConnectedAccount:
    """A payee's account at the gateway and whether it may receive money yet."""

    id: str
    country: str
    currency: str
    payouts_enabled: bool
    transfers_enabled: bool
    details_submitted: bool


@dataclass(frozen=True)
class OnboardingLink:
    """A short-lived address where the payee completes the gateway's onboarding (identity, bank account)."""

    url: str
    expires_at: datetime


@dataclass(frozen=True)
class BalanceTransactionResult:
    """One movement of the platform's balance at the gateway; `amount_minor` is signed (money out < 0)."""

    id: str
    amount_minor: int
    currency: str
    fee_minor: int
    net_minor: int
    type: str
    source: str | None
    created: datetime


@dataclass(frozen=True)
class ReversalResult:
    """Part or all of a transfer taken back from the destination into the platform's balance."""

    id: str
    amount: Money
    balance_transaction: BalanceTransactionResult | None
    created: datetime


@dataclass(frozen=True)
class TransferResult:
    """A transfer as the gateway knows it, with its balance transaction and reversals when it has them."""

    id: str
    amount: Money
    destination: str
    transfer_group: str | None
    created: datetime
    amount_reversed_minor: int = 0
    balance_transaction: BalanceTransactionResult | None = None
    reversals: tuple[ReversalResult, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def fully_reversed(self) -> bool:
        """Whether every minor unit of the transfer has been taken back."""
        return self.amount_reversed_minor >= self.amount.amount


@dataclass(frozen=True)
class FundingResult:
    """A request for money into the platform's balance; `client_secret` lets a browser complete a payment."""

    id: str
    amount: Money
    status: str
    client_secret: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    #: the platform balance's side of a succeeded funding: the gross amount, Stripe's fee and the net
    balance_transaction: BalanceTransactionResult | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified event: id, type, creation time, the object it is about, the connected account if any."""

    id: str
    type: str
    created: datetime
    object: dict[str, Any]
    account: str | None
    livemode: bool
    api_version: str | None
    payload: dict[str, Any]


class PayoutGateway(Protocol):
    """Connected accounts, transfers to them, the platform balance's history: what payouts need.

    Every method returns what the gateway now holds or raises a `payments.errors.GatewayError` subclass:
    `TransferDeclinedError` (nothing was done; do not repeat), `GatewayUnavailableError` (nothing was
    done; try again later) or `GatewayOutcomeUnknownError` (it may have been done: repeat only with the
    same idempotency key, or look it up).
    """

    name: str

    def create_connected_account(
        self, *, reference: str, country: str, currency: str, email: str | None = None
    ) -> ConnectedAccount:
        """A new connected account for the payee `reference` (idempotent per reference)."""
        ...

    def retrieve_account(self, account_id: str) -> ConnectedAccount:
        """The connected account as the gateway knows it now."""
        ...

    def create_onboarding_link(self, *, account_id: str, refresh_url: str, return_url: str) -> OnboardingLink:
        """A fresh onboarding address for the account."""
        ...

    def create_transfer(
        self,
        *,
        amount: Money,
        destination: str,
        idempotency_key: str,
        transfer_group: str,
        metadata: dict[str, str],
    ) -> TransferResult:
        """Move `amount` from the platform balance to `destination`; a repeated key gives the first result."""
        ...

    def retrieve_transfer(self, transfer_id: str) -> TransferResult | None:
        """A transfer with its balance transaction and reversals; None if the gateway has no such one."""
        ...

    def find_transfers(self, transfer_group: str) -> list[TransferResult]:
        """Every transfer of a transfer group (the lookup for payouts whose outcome is unknown)."""
        ...

    def list_transfers(self, *, created_from: datetime, created_to: datetime) -> list[TransferResult]:
        """Every transfer created in [created_from, created_to), for reconciliation."""
        ...

    def list_balance_transactions(
        self, *, created_from: datetime, created_to: datetime
    ) -> list[BalanceTransactionResult]:
        """Every movement of the platform's balance created in [created_from, created_to)."""
        ...

    def platform_balance(self) -> dict[str, int]:
        """The platform's available balance per currency (upper-case ISO code → minor units)."""
        ...

    def create_funding(
        self, *, amount: Money, reference: str, idempotency_key: str, metadata: dict[str, str]
    ) -> FundingResult:
        """Ask for money into the platform balance for `reference` (confirmed later by a webhook)."""
        ...

    def retrieve_funding(self, funding_id: str) -> FundingResult | None:
        """A funding with its balance transaction once it succeeded; None if the gateway has no such one."""
        ...
