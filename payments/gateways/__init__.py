"""Payout gateways: the `PayoutGateway` protocol, Stripe Connect, and the embedded local gateway."""

from __future__ import annotations

from payments.gateways.base import (
    BalanceTransactionResult,
    ConnectedAccount,
    FundingResult,
    OnboardingLink,
    PayoutGateway,
    ReversalResult,
    TransferResult,
    WebhookEvent,
)

__all__ = [
    "BalanceTransactionResult",
    "ConnectedAccount",
    "FundingResult",
    "OnboardingLink",
    "PayoutGateway",
    "ReversalResult",
    "TransferResult",
    "WebhookEvent",
]
