"""The embedded default gateway: payouts are booked in the ledger only, no money leaves anywhere.

Its ids are derived from the caller's keys, so a repeated call (a retry after a crash) returns the same
transfer, exactly as Stripe's idempotency would. It keeps what it created in memory for the life of the
process: a lookup in a later process finds nothing, which is the truth here (no money moved), so a payout
whose outcome was lost is failed and its hold released, and the next run pays the balance again.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta

from payments.db import utcnow
from payments.gateways.base import (
    BalanceTransactionResult,
    ConnectedAccount,
    FundingResult,
    OnboardingLink,
    TransferResult,
)
from payments.money import Money


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


class LocalGateway:
    """Transfers that only exist in the ledger; accounts that are ready at once."""

    name = "local"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: dict[str, TransferResult] = {}
        self._accounts: dict[str, ConnectedAccount] = {}

    def create_connected_account(
        self, *, reference: str, country: str, currency: str, email: str | None = None
    ) -> ConnectedAccount:
        """An account ready for payouts at once (there is no one to verify the payee here)."""
        account = ConnectedAccount(
            id=f"acct_local_{_digest(reference)[:16]}",
            country=country,
            currency=currency,
            payouts_enabled=True,
            transfers_enabled=True,
            details_submitted=True,
        )
        with self._lock:
            self._accounts[account.id] = account
        return account

    def retrieve_account(self, account_id: str) -> ConnectedAccount:
        """The account; local accounts are always enabled."""
        with self._lock:
            known = self._accounts.get(account_id)
        return known or ConnectedAccount(
            id=account_id,
            country="",
            currency="",
            payouts_enabled=True,
            transfers_enabled=True,
            details_submitted=True,
        )

    def create_onboarding_link(self, *, account_id: str, refresh_url: str, return_url: str) -> OnboardingLink:
        """Nothing to fill in: the link leads straight back."""
        return OnboardingLink(url=return_url, expires_at=utcnow() + timedelta(minutes=5))

    def create_transfer(
        self,
        *,
        amount: Money,
        destination: str,
        idempotency_key: str,
        transfer_group: str,
        metadata: dict[str, str],
    ) -> TransferResult:
        """A transfer whose id follows from the key: the same key gives the same transfer."""
        transfer_id = f"tr_local_{_digest(idempotency_key)}"
        with self._lock:
            existing = self._transfers.get(transfer_id)
            if existing is not None:
                return existing
            created = utcnow()
            transfer = TransferResult(
                id=transfer_id,
                amount=amount,
                destination=destination,
                transfer_group=transfer_group,
                created=created,
                balance_transaction=BalanceTransactionResult(
                    id=f"txn_local_{_digest(idempotency_key, 'txn')}",
                    amount_minor=-amount.amount,
                    currency=amount.currency,
                    fee_minor=0,
                    net_minor=-amount.amount,
                    type="transfer",
                    source=transfer_id,
                    created=created,
                ),
                metadata=dict(metadata),
            )
            self._transfers[transfer_id] = transfer
            return transfer

    def retrieve_transfer(self, transfer_id: str) -> TransferResult | None:
        """A transfer made by this process, or None."""
        with self._lock:
            return self._transfers.get(transfer_id)

    def find_transfers(self, transfer_group: str) -> list[TransferResult]:
        """The transfers of the group made by this process."""
        with self._lock:
            return [t for t in self._transfers.values() if t.transfer_group == transfer_group]

    def list_transfers(self, *, created_from: datetime, created_to: datetime) -> list[TransferResult]:
        """The transfers made by this process in the period."""
        with self._lock:
            return [t for t in self._transfers.values() if created_from <= t.created < created_to]

    def list_balance_transactions(
        self, *, created_from: datetime, created_to: datetime
    ) -> list[BalanceTransactionResult]:
        """The balance side of this process's transfers in the period."""
        with self._lock:
            return [
                t.balance_transaction
                for t in self._transfers.values()
                if t.balance_transaction is not None and created_from <= t.created < created_to
            ]

    def platform_balance(self) -> dict[str, int]:
        """No balance is kept outside the ledger."""
        return {}

    def create_funding(
        self, *, amount: Money, reference: str, idempotency_key: str, metadata: dict[str, str]
    ) -> FundingResult:
        """Locally there is no one to collect from: fund projects with the billing CLI instead."""
        return FundingResult(
            id=f"pi_local_{_digest(idempotency_key)}",
            amount=amount,
            status="requires_payment_method",
            client_secret=None,
            metadata={**metadata, "reference": reference},
        )

    def retrieve_funding(self, funding_id: str) -> FundingResult | None:
        """Local fundings never complete."""
        return None
