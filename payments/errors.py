"""Errors raised by the bank. Each carries a stable machine-readable code."""

from __future__ import annotations

from typing import Any


class PaymentsError(Exception):
    """Base of every refusal raised by `payments`."""

    code = "payments_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


class InvalidAmount(PaymentsError):
    """An amount that is not a non-negative integer of minor units, or mixes currencies."""

    code = "invalid_amount"


class UnbalancedTransaction(PaymentsError):
    """Debits and credits of a transaction differ in some currency."""

    code = "unbalanced_transaction"


class InsufficientFunds(PaymentsError):
    """An account flagged as never negative would go below zero."""

    code = "insufficient_funds"


class FundsTakenBeforeCommit(PaymentsError):
    """A balance change queued for the commit found the money gone: a concurrent transaction took it first.
    Retryable: the unit of work, run again, sees the new balance (`payments.deferred_balances`)."""

    code = "funds_taken_before_commit"


class IdempotencyConflict(PaymentsError):
    """The same idempotency key was used with different content."""

    code = "idempotency_conflict"


class HoldAlreadyResolved(PaymentsError):
    """A hold was already posted, voided or expired."""

    code = "hold_already_resolved"


class AccountNotFound(PaymentsError):
    """No account with that code."""

    code = "account_not_found"


class PayoutError(PaymentsError):
    """A payout cannot be made as asked."""

    code = "payout_error"


class PayoutAccountCountryConflict(PayoutError):
    """The payee's account exists in another country: a connected account's country never changes."""

    code = "payout_account_country"


class GatewayError(PaymentsError):
    """The payout gateway refused or failed."""

    code = "gateway_error"


class WebhookSignatureError(PaymentsError):
    """A webhook's signature or timestamp did not verify."""

    code = "invalid_signature"


class CurrencyMismatch(InvalidAmount):
    """Two amounts in different currencies were combined or compared."""

    code = "currency_mismatch"


class HoldNotFound(PaymentsError):
    """No pending transaction (hold) with that id."""

    code = "hold_not_found"


class AccountConflict(PaymentsError):
    """An account already exists with the same code and currency but a different kind or overdraft rule."""

    code = "account_conflict"


class TransferDeclinedError(GatewayError):
    """The gateway refused the request and did nothing (bad destination, balance too low): do not repeat."""

    code = "transfer_declined"


class GatewayUnavailableError(GatewayError):
    """The gateway did not act on the request (rate limited, unreachable before sending): try again later."""

    code = "gateway_unavailable"


class GatewayOutcomeUnknownError(GatewayError):
    """The request may or may not have taken effect (connection lost, 5xx after retries): repeat it only with
    the same idempotency key, or look it up."""

    code = "gateway_outcome_unknown"
