"""Stripe Connect behind the `PayoutGateway` protocol: the only module of the project that imports `stripe`.

Every call goes through one `stripe.StripeClient` with a pinned API version and an explicit retry count
(a client retries nothing unless told). stripe-python generates an idempotency key per call, which does
not survive a crash, so every creating call here passes a key derived from our own rows instead.

Stripe errors become `payments.errors` exceptions that say what the caller may do next:

- `TransferDeclinedError`: a 4xx refusal; nothing happened and the same request would be refused again.
- `GatewayUnavailableError`: rate limited, or our key or permissions refused; nothing happened; try later.
- `GatewayOutcomeUnknownError`: connection lost, 409 or 5xx after the client's retries, or an idempotency
  conflict; the request may have taken effect: repeat it with the same key or look it up, never with a
  new key.

Amounts cross the boundary in ISO 4217 minor units (the ledger's) and are converted to Stripe's own minor
units, which differ for a few currencies (Stripe sends ISK with two decimals and MGA and UGX with none).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, cast

import stripe
import stripe.params

from payments.errors import (
    GatewayError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
    IdempotencyConflict,
    InvalidAmount,
    TransferDeclinedError,
    WebhookSignatureError,
)
from payments.gateways.base import (
    BalanceTransactionResult,
    ConnectedAccount,
    FundingResult,
    OnboardingLink,
    ReversalResult,
    TransferResult,
    WebhookEvent,
)
from payments.money import Money, exponent

#: The API version every request is pinned to (the one stripe-python 16's types describe). Changing it is a
#: deliberate upgrade: read Stripe's changelog, run the test-mode suite, then change this and the fake server.
STRIPE_API_VERSION: Final = "2026-10-28.endive"

#: How far a webhook's signed timestamp may be from our clock, either way.
WEBHOOK_TOLERANCE_SECONDS: Final = 300

#: Currencies Stripe counts without decimals, and those it counts in thousandths (docs.stripe.com/currencies).
_STRIPE_ZERO_DECIMAL: Final = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
_STRIPE_THREE_DECIMAL: Final = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

_TRANSFER_EXPAND: Final = ["balance_transaction", "reversals.data.balance_transaction"]


def stripe_exponent(currency: str) -> int:
    """How many decimal places Stripe's amounts have in `currency`."""
    if currency in _STRIPE_ZERO_DECIMAL:
        return 0
    if currency in _STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_stripe_amount(amount: Money) -> int:
    """`amount` in Stripe's minor units; InvalidAmount if Stripe cannot express it exactly."""
    shift = stripe_exponent(amount.currency) - exponent(amount.currency)
    if shift >= 0:
        return amount.amount * int(10**shift)
    quotient, remainder = divmod(amount.amount, int(10**-shift))
    if remainder:
        raise InvalidAmount(
            f"{amount.format()} cannot be sent to Stripe exactly (it counts {amount.currency} coarser)"
        )
    return quotient


def from_stripe_amount(amount: int, currency: str) -> Money:
    """Stripe's `amount` of lower-case `currency` as ledger Money (ISO minor units)."""
    code = currency.upper()
    shift = stripe_exponent(code) - exponent(code)
    if shift <= 0:
        return Money(amount * int(10**-shift), code)
    quotient, remainder = divmod(amount, int(10**shift))
    if remainder:
        raise InvalidAmount(f"Stripe amount {amount} {code} has a fraction of an ISO minor unit")
    return Money(quotient, code)


def _timestamp(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def _id_of(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


def balance_transaction_from(data: dict[str, Any]) -> BalanceTransactionResult:
    """Our view of a Stripe balance transaction (a plain dict)."""
    currency = str(data["currency"])
    return BalanceTransactionResult(
        id=str(data["id"]),
        amount_minor=from_stripe_amount(int(data["amount"]), currency).amount,
        currency=currency.upper(),
        fee_minor=from_stripe_amount(int(data.get("fee") or 0), currency).amount,
        net_minor=from_stripe_amount(int(data.get("net") or 0), currency).amount,
        type=str(data.get("type") or ""),
        source=_id_of(data.get("source")),
        created=_timestamp(data["created"]),
    )


def _expanded_balance_transaction(value: Any) -> BalanceTransactionResult | None:
    return balance_transaction_from(value) if isinstance(value, dict) else None


def transfer_from(data: dict[str, Any]) -> TransferResult:
    """Our view of a Stripe transfer (a plain dict, as in an API response or a webhook's `data.object`)."""
    currency = str(data["currency"])
    reversals_list = data.get("reversals") or {}
    reversals = tuple(
        ReversalResult(
            id=str(item["id"]),
            amount=from_stripe_amount(int(item["amount"]), currency),
            balance_transaction=_expanded_balance_transaction(item.get("balance_transaction")),
            created=_timestamp(item["created"]),
        )
        for item in reversals_list.get("data") or []
    )
    return TransferResult(
        id=str(data["id"]),
        amount=from_stripe_amount(int(data["amount"]), currency),
        destination=_id_of(data.get("destination")) or "",
        transfer_group=data.get("transfer_group"),
        created=_timestamp(data["created"]),
        amount_reversed_minor=from_stripe_amount(int(data.get("amount_reversed") or 0), currency).amount,
        balance_transaction=_expanded_balance_transaction(data.get("balance_transaction")),
        reversals=reversals,
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def account_from(data: dict[str, Any]) -> ConnectedAccount:
    """Our view of a Stripe connected account."""
    capabilities = data.get("capabilities") or {}
    return ConnectedAccount(
        id=str(data["id"]),
        country=str(data.get("country") or ""),
        currency=str(data.get("default_currency") or "").upper(),
        payouts_enabled=bool(data.get("payouts_enabled")),
        transfers_enabled=capabilities.get("transfers") == "active",
        details_submitted=bool(data.get("details_submitted")),
    )


def map_stripe_error(exc: stripe.StripeError) -> GatewayError:
    """The `payments.errors` exception that tells the caller what it may do after `exc`."""
    body: dict[str, Any] = exc.json_body if isinstance(exc.json_body, dict) else {}
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    details = {
        "stripe_code": exc.code,
        "stripe_type": error.get("type"),
        "http_status": exc.http_status,
        "request_id": exc.request_id,
    }
    message = f"Stripe: {exc.user_message or str(exc) or type(exc).__name__}"
    if isinstance(exc, stripe.APIConnectionError | stripe.IdempotencyError):
        # The request may have reached Stripe; an idempotency conflict means an earlier request under this key
        # carried other parameters, and that one may have been carried out.
        return GatewayOutcomeUnknownError(message, details=details)
    if isinstance(exc, stripe.RateLimitError | stripe.AuthenticationError | stripe.PermissionError):
        return GatewayUnavailableError(message, details=details)
    status = exc.http_status
    if status is None or status == 409 or status >= 500:
        return GatewayOutcomeUnknownError(message, details=details)
    return TransferDeclinedError(message, details=details)


class _QuickRetryClient(stripe.RequestsClient):
    """stripe-python's default HTTP client with a shorter first backoff (tests; latency-sensitive workers)."""

    def __init__(self, *, delay_seconds: float) -> None:
        super().__init__()
        self._delay_seconds = delay_seconds

    def _sleep_time_seconds(self, num_retries: int) -> float:
        return float(min(self._delay_seconds * (2 ** (num_retries - 1)), self.MAX_DELAY))


class StripeGateway:
    """Payouts through Stripe Connect transfers."""

    name = "stripe"

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None = None,
        max_network_retries: int = 2,
        retry_delay_seconds: float | None = None,
        api_version: str = STRIPE_API_VERSION,
    ) -> None:
        if not api_key.startswith(("sk_", "rk_")):
            raise ValueError("STRIPE_SECRET_KEY must be a secret (sk_...) or restricted (rk_...) key")
        self.livemode = "_live_" in api_key
        self.api_version = api_version
        http_client = (
            None if retry_delay_seconds is None else _QuickRetryClient(delay_seconds=retry_delay_seconds)
        )
        self._client = stripe.StripeClient(
            api_key,
            stripe_version=api_version,
            max_network_retries=max_network_retries,
            base_addresses={"api": api_base} if api_base else None,
            http_client=http_client,
        )

    # connected accounts ---------------------------------------------------------------------------------

    def create_connected_account(
        self, *, reference: str, country: str, currency: str, email: str | None = None
    ) -> ConnectedAccount:
        """An Express-style account (Stripe-hosted onboarding and dashboard) that can receive transfers."""
        params: dict[str, Any] = {
            "country": country,
            "default_currency": currency.lower(),
            "controller": {
                "fees": {"payer": "application"},
                "losses": {"payments": "application"},
                "requirement_collection": "stripe",
                "stripe_dashboard": {"type": "express"},
            },
            "capabilities": {"transfers": {"requested": True}},
            "metadata": {"reference": reference},
        }
        if email:
            params["email"] = email
        try:
            account = self._client.v1.accounts.create(
                params=cast("stripe.params.AccountCreateParams", params),
                options={"idempotency_key": f"account:{reference}:{country}:{currency}:v1"},
            )
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return account_from(account.to_dict())

    def retrieve_account(self, account_id: str) -> ConnectedAccount:
        """The account's current capabilities and onboarding status."""
        try:
            account = self._client.v1.accounts.retrieve(account_id)
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return account_from(account.to_dict())

    def create_onboarding_link(self, *, account_id: str, refresh_url: str, return_url: str) -> OnboardingLink:
        """A one-time onboarding address (it expires after a few minutes; ask for a new one each time)."""
        try:
            link = self._client.v1.account_links.create(
                params={
                    "account": account_id,
                    "refresh_url": refresh_url,
                    "return_url": return_url,
                    "type": "account_onboarding",
                }
            )
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return OnboardingLink(url=link.url, expires_at=_timestamp(link.expires_at))

    # transfers ------------------------------------------------------------------------------------------

    def create_transfer(
        self,
        *,
        amount: Money,
        destination: str,
        idempotency_key: str,
        transfer_group: str,
        metadata: dict[str, str],
    ) -> TransferResult:
        """A transfer from the platform balance to `destination`, under our own idempotency key."""
        try:
            transfer = self._client.v1.transfers.create(
                params={
                    "amount": to_stripe_amount(amount),
                    "currency": amount.currency.lower(),
                    "destination": destination,
                    "transfer_group": transfer_group,
                    "metadata": metadata,
                    "expand": ["balance_transaction"],
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return transfer_from(transfer.to_dict())

    def retrieve_transfer(self, transfer_id: str) -> TransferResult | None:
        """The transfer with its balance transaction and reversals, or None if Stripe has no such transfer."""
        try:
            transfer = self._client.v1.transfers.retrieve(
                transfer_id, params={"expand": list(_TRANSFER_EXPAND)}
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise map_stripe_error(exc) from exc
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return transfer_from(transfer.to_dict())

    def find_transfers(self, transfer_group: str) -> list[TransferResult]:
        """Every transfer of `transfer_group`, oldest first."""
        return self._list_transfers({"transfer_group": transfer_group})

    def list_transfers(self, *, created_from: datetime, created_to: datetime) -> list[TransferResult]:
        """Every transfer created in [created_from, created_to), oldest first."""
        return self._list_transfers(
            {"created": {"gte": int(created_from.timestamp()), "lt": int(created_to.timestamp())}}
        )

    def _list_transfers(self, filters: dict[str, Any]) -> list[TransferResult]:
        params = {**filters, "limit": 100, "expand": ["data.balance_transaction"]}
        try:
            page = self._client.v1.transfers.list(params=cast("stripe.params.TransferListParams", params))
            items = [transfer_from(t.to_dict()) for t in page.auto_paging_iter()]
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return sorted(items, key=lambda t: (t.created, t.id))

    # the platform balance -------------------------------------------------------------------------------

    def list_balance_transactions(
        self, *, created_from: datetime, created_to: datetime
    ) -> list[BalanceTransactionResult]:
        """Every movement of the platform balance created in [created_from, created_to), oldest first."""
        params = {
            "created": {"gte": int(created_from.timestamp()), "lt": int(created_to.timestamp())},
            "limit": 100,
        }
        try:
            page = self._client.v1.balance_transactions.list(
                params=cast("stripe.params.BalanceTransactionListParams", params)
            )
            items = [balance_transaction_from(t.to_dict()) for t in page.auto_paging_iter()]
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return sorted(items, key=lambda t: (t.created, t.id))

    def platform_balance(self) -> dict[str, int]:
        """The platform's available balance per currency, in ISO minor units."""
        try:
            balance = self._client.v1.balance.retrieve()
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        totals: dict[str, int] = {}
        for item in balance.to_dict().get("available") or []:
            money = from_stripe_amount(int(item["amount"]), str(item["currency"]))
            totals[money.currency] = totals.get(money.currency, 0) + money.amount
        return totals

    def create_funding(
        self, *, amount: Money, reference: str, idempotency_key: str, metadata: dict[str, str]
    ) -> FundingResult:
        """A PaymentIntent for `amount`; the client completes it in the browser with the returned secret."""
        try:
            intent = self._client.v1.payment_intents.create(
                params={
                    "amount": to_stripe_amount(amount),
                    "currency": amount.currency.lower(),
                    "automatic_payment_methods": {"enabled": True},
                    "metadata": {**metadata, "reference": reference},
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.IdempotencyError as exc:
            # Asking for money moves none: another amount under a used key is the client's mistake, not an
            # outcome to look up.
            raise IdempotencyConflict(
                "This key already asked Stripe for another funding; a retry sends the same amount.",
                details={"stripe_code": exc.code, "request_id": exc.request_id},
            ) from exc
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return funding_from(intent.to_dict())

    def retrieve_funding(self, funding_id: str) -> FundingResult | None:
        """The PaymentIntent with its charge's balance transaction, or None if Stripe has no such one."""
        try:
            intent = self._client.v1.payment_intents.retrieve(
                funding_id, params={"expand": ["latest_charge.balance_transaction"]}
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise map_stripe_error(exc) from exc
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        return funding_from(intent.to_dict())


def funding_from(data: dict[str, Any]) -> FundingResult:
    """Our view of a PaymentIntent (a plain dict), with its charge's balance transaction when expanded."""
    charge = data.get("latest_charge")
    txn = charge.get("balance_transaction") if isinstance(charge, dict) else None
    received = int(data.get("amount_received") or 0)
    return FundingResult(
        id=str(data["id"]),
        amount=from_stripe_amount(received or int(data["amount"]), str(data["currency"])),
        status=str(data.get("status") or ""),
        client_secret=data.get("client_secret"),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        balance_transaction=_expanded_balance_transaction(txn),
    )


def _signature_parts(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None:
        raise ValueError("no timestamp")
    return timestamp, signatures


def verify_webhook(
    *,
    payload: bytes,
    signature_header: str | None,
    secret: str,
    now: datetime | None = None,
    tolerance_seconds: int = WEBHOOK_TOLERANCE_SECONDS,
) -> WebhookEvent:
    """The event in `payload` if its `Stripe-Signature` verifies and its timestamp is within the tolerance.

    `secret` may list several secrets separated by commas: the platform's endpoint and its Connect endpoint
    sign with different secrets, and a rolled secret overlaps its successor for a while.

    stripe-python checks the HMAC over the raw body and refuses old timestamps; it accepts any future one, so
    a validly signed request stamped ahead of our clock would pass: those are refused here too.
    """
    secrets = [s.strip() for s in secret.split(",") if s.strip()]
    if not secrets:
        raise WebhookSignatureError("no webhook secret is configured")
    refusal: stripe.SignatureVerificationError | None = None
    try:
        for candidate in secrets:
            try:
                stripe.WebhookSignature.verify_header(payload, signature_header, candidate, tolerance_seconds)
            except stripe.SignatureVerificationError as exc:
                refusal = exc
                continue
            refusal = None
            break
        timestamp, _ = _signature_parts(signature_header or "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookSignatureError("the Stripe-Signature header or the body is malformed") from exc
    if refusal is not None:
        raise WebhookSignatureError(str(refusal)) from refusal
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(
            f"the signature's timestamp is more than {tolerance_seconds} s away from now",
            details={"t": timestamp},
        )
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise WebhookSignatureError("the body is not JSON") from exc
    if not isinstance(data, dict) or data.get("object") != "event" or not isinstance(data.get("data"), dict):
        raise WebhookSignatureError("the body is not a Stripe event")
    obj = data["data"].get("object")
    return WebhookEvent(
        id=str(data["id"]),
        type=str(data["type"]),
        created=_timestamp(data["created"]),
        object=obj if isinstance(obj, dict) else {},
        account=data.get("account"),
        livemode=bool(data.get("livemode")),
        api_version=data.get("api_version"),
        payload=data,
    )
