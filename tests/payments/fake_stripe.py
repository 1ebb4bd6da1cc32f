"""A small, stateful stand-in for Stripe's API, served over HTTP on 127.0.0.1 for stripe-python to talk to.

It checks what it receives the way Stripe does (bearer secret key, pinned `Stripe-Version`, form-encoded
parameters with required fields and integer amounts, idempotency keys replayed with the stored response or
refused with `idempotency_error` when the parameters differ, the platform balance) and answers in Stripe's
JSON shapes for the endpoints Labelforce uses: accounts, account links, transfers and their reversals, the
balance and its transactions, events and payment intents.

Faults are injected per endpoint ("POST /v1/transfers"), consumed by the next calls in order:

- ``rate_limit`` (429) and ``conflict`` (409): answered before anything runs; nothing stored under the key.
- ``server_error`` (500): nothing is created, but the 500 is stored under the key and replayed (as Stripe
  does, with ``Stripe-Should-Retry: false``).
- ``drop_before``: the connection is closed before anything runs.
- ``drop_after``: the request runs (a transfer is created, the response stored under the key), then the
  connection is closed without an answer: the client cannot tell whether it worked.

Every state change is also recorded as an event (``transfer.created``, ``account.updated``, ...) that tests
can sign with `sign_payload` and deliver to the webhook endpoint in any order.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "sk_test_labelforce_fake_0123456789"
FAULTS = frozenset({"rate_limit", "conflict", "server_error", "drop_before", "drop_after"})
_KEY_PART = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")


class FakeStripeError(Exception):
    """An error answer, in Stripe's shape."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        # Stripe stores a result under the idempotency key once the endpoint began executing: parameter
        # validation failures are not stored, refusals decided by the endpoint (balance, capability) are.
        self.stored = stored
        self.body: dict[str, Any] = {"error": {"type": type_, "message": message}}
        if code:
            self.body["error"]["code"] = code
        if param:
            self.body["error"]["param"] = param


def invalid(
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    status: int = 400,
    stored: bool = False,
) -> FakeStripeError:
    return FakeStripeError(status, "invalid_request_error", message, code=code, param=param, stored=stored)


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's nested form encoding (``metadata[k]=v``, ``expand[0]=x``) as nested dicts and lists."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        parts = [m.group(1) if m.group(1) is not None else m.group(2) for m in _KEY_PART.finditer(raw_key)]
        node = root
        for i, raw_part in enumerate(parts):
            part = raw_part or str(len(node))  # "expand[]=x" appends
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def sign_payload(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`: ``t=<unix time>,v1=<HMAC-SHA256 of "t.payload">``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass
class Stored:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    stripe_version: str | None
    outcome: str = "answered"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class FakeStripe:
    """The fake's state and behaviour; `FakeStripeServer` puts it on the network."""

    def __init__(self, *, api_key: str = API_KEY, api_version: str) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self.lock = threading.RLock()
        self.reset()

    # test controls --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (between tests)."""
        with self.lock:
            self.accounts: dict[str, dict[str, Any]] = {}
            self.account_balances: dict[str, dict[str, int]] = {}
            self.transfers: dict[str, dict[str, Any]] = {}
            self.balance_transactions: dict[str, dict[str, Any]] = {}
            self.payment_intents: dict[str, dict[str, Any]] = {}
            self.charges: dict[str, dict[str, Any]] = {}
            #: Stripe's processing fee on client payments, in basis points (deducted from the balance's net)
            self.charge_fee_bps = 0
            self.bank_payouts: dict[str, dict[str, Any]] = {}
            self.events: dict[str, dict[str, Any]] = {}
            self.available: dict[str, int] = {}
            self.idempotency: dict[str, Stored] = {}
            self.in_flight: set[str] = set()
            self.faults: dict[str, deque[str]] = {}
            self.requests: list[RecordedRequest] = []
            self.clock_offset = 0
            self._seq = itertools.count(1)

    def now(self) -> int:
        return int(time.time()) + self.clock_offset

    def fund(self, currency: str, amount: int) -> None:
        """Add `amount` (Stripe minor units) to the platform's available balance."""
        with self.lock:
            cur = currency.lower()
            self.available[cur] = self.available.get(cur, 0) + amount
            self._balance_transaction(amount=amount, currency=cur, type_="adjustment", source=None)

    def inject(self, endpoint: str, fault: str, times: int = 1) -> None:
        """Make the next `times` calls of `endpoint` ("POST /v1/transfers") fail with `fault`."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        with self.lock:
            self.faults.setdefault(endpoint, deque()).extend([fault] * times)

    def forget_idempotency_keys(self) -> None:
        """What Stripe may do after 24 hours: replays are no longer guaranteed."""
        with self.lock:
            self.idempotency.clear()

    def enable_account(self, account_id: str, *, payouts_enabled: bool = True) -> dict[str, Any]:
        """Finish (or undo) the account's onboarding, as Stripe does after KYC, and emit `account.updated`."""
        with self.lock:
            account = self.accounts[account_id]
            previous = {"payouts_enabled": account["payouts_enabled"]}
            account["details_submitted"] = True
            account["payouts_enabled"] = payouts_enabled
            account["charges_enabled"] = payouts_enabled
            account["capabilities"]["transfers"] = "active" if payouts_enabled else "inactive"
            account["requirements"]["currently_due"] = [] if payouts_enabled else ["external_account"]
            self._event("account.updated", account, account=account_id, previous=previous)
            return dict(account)

    def succeed_payment_intent(self, intent_id: str) -> dict[str, Any]:
        """The client paid: the net lands in the platform balance; emits `payment_intent.succeeded`."""
        with self.lock:
            intent = self.payment_intents[intent_id]
            amount, currency = intent["amount"], intent["currency"]
            fee = amount * self.charge_fee_bps // 10_000
            charge_id = self._id("ch")
            txn = self._balance_transaction(
                amount=amount, currency=currency, type_="charge", source=charge_id, fee=fee
            )
            self.available[currency] = self.available.get(currency, 0) + amount - fee
            self.charges[charge_id] = {
                "id": charge_id,
                "object": "charge",
                "amount": amount,
                "balance_transaction": txn["id"],
                "currency": currency,
                "paid": True,
                "payment_intent": intent_id,
                "status": "succeeded",
            }
            intent["status"] = "succeeded"
            intent["amount_received"] = amount
            intent["latest_charge"] = charge_id
            self._event("payment_intent.succeeded", intent)
            return dict(intent)

    def bank_payout(
        self, account_id: str, *, amount: int, currency: str, status: str, payout_id: str | None = None
    ):
        """A connected account's payout to its bank changes status (paid, failed): emits `payout.<status>`."""
        with self.lock:
            payout = self.bank_payouts.get(payout_id or "")
            if payout is None:
                payout = {
                    "id": payout_id or self._id("po"),
                    "object": "payout",
                    "amount": amount,
                    "currency": currency.lower(),
                    "arrival_date": self.now() + 86400,
                    "created": self.now(),
                    "destination": "ba_" + uuid.uuid4().hex[:14],
                    "failure_code": None,
                    "failure_message": None,
                    "livemode": False,
                    "metadata": {},
                    "method": "standard",
                    "status": status,
                    "type": "bank_account",
                }
                self.bank_payouts[payout["id"]] = payout
            payout["status"] = status
            if status == "failed":
                payout["failure_code"] = "account_closed"
                payout["failure_message"] = "The bank account has been closed."
            return self._event(f"payout.{status}", payout, account=account_id)

    def reverse(self, transfer_id: str, amount: int | None = None) -> dict[str, Any]:
        """Reverse (part of) a transfer from the dashboard, as finance might: emits `transfer.reversed`."""
        with self.lock:
            return self._create_reversal(transfer_id, {} if amount is None else {"amount": str(amount)})

    def transfers_in_group(self, group: str) -> list[dict[str, Any]]:
        """The transfers carrying `transfer_group`, oldest first."""
        with self.lock:
            return [dict(t) for t in self.transfers.values() if t["transfer_group"] == group]

    def events_of(self, *types: str) -> list[dict[str, Any]]:
        """The recorded events (of `types`, if given), oldest first."""
        with self.lock:
            return [
                json.loads(json.dumps(e)) for e in self.events.values() if not types or e["type"] in types
            ]

    def count_requests(self, method: str, path: str) -> int:
        """How many requests reached `method path` (answered, failed or dropped)."""
        with self.lock:
            return sum(1 for r in self.requests if r.method == method and r.path == path)

    # the HTTP side --------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Answer one request."""
        split = urlsplit(raw_path)
        path = split.path
        params = parse_form(parse_qsl(split.query, keep_blank_values=True))
        if body:
            params.update(parse_form(parse_qsl(body.decode(), keep_blank_values=True)))
        key = headers.get("idempotency-key")
        record = RecordedRequest(method, path, params, key, headers.get("stripe-version"))
        with self.lock:
            self.requests.append(record)
        try:
            self._authenticate(headers)
            endpoint = f"{method} {self._route_pattern(path)}"
            with self.lock:
                queue = self.faults.get(endpoint)
                fault = queue.popleft() if queue else None
            if fault == "rate_limit":
                record.outcome = "rate_limited"
                raise FakeStripeError(429, "invalid_request_error", "Too many requests", code="rate_limit")
            if fault == "conflict":
                record.outcome = "conflict"
                raise FakeStripeError(
                    409, "api_error", "A conflicting request is in progress", code="lock_timeout"
                )
            if fault == "drop_before":
                record.outcome = "dropped"
                return Answer(0, {}, drop=True)
            if method == "POST" and key:
                answer = self._idempotent(
                    key, path, params, lambda: self._execute(method, path, params, fault)
                )
            else:
                answer = self._execute(method, path, params, fault)
            if fault == "drop_after":
                record.outcome = "dropped"
                answer.drop = True
            return answer
        except FakeStripeError as failure:
            return Answer(failure.status, failure.body)

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        scheme, _, secret = auth.partition(" ")
        if scheme != "Bearer" or not secret.startswith("sk_test_") or secret != self.api_key:
            raise FakeStripeError(401, "invalid_request_error", "Invalid API Key provided.")
        version = headers.get("stripe-version")
        if version != self.api_version:
            raise invalid(f"Invalid Stripe API version: {version}", code="invalid_api_version")

    def _idempotent(self, key: str, path: str, params: dict[str, Any], run: Any) -> Answer:
        fingerprint = json.dumps([path, params], sort_keys=True)
        with self.lock:
            stored = self.idempotency.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise FakeStripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.",
                    )
                headers = {"Idempotent-Replayed": "true"}
                if stored.status >= 500:
                    headers["Stripe-Should-Retry"] = "false"
                return Answer(stored.status, json.loads(json.dumps(stored.body)), headers)
            if key in self.in_flight:
                raise FakeStripeError(
                    409, "idempotency_error", "There is currently another in-progress request using this key."
                )
            self.in_flight.add(key)
        try:
            try:
                answer: Answer = run()
            except FakeStripeError as failure:
                if failure.status < 500 and not failure.stored:
                    raise
                answer = Answer(failure.status, failure.body)
            with self.lock:
                self.idempotency[key] = Stored(
                    fingerprint, answer.status, json.loads(json.dumps(answer.body))
                )
            return answer
        finally:
            with self.lock:
                self.in_flight.discard(key)

    @staticmethod
    def _route_pattern(path: str) -> str:
        return re.sub(r"/(acct|tr|trr|txn|pi|po|evt|ch)_[A-Za-z0-9]+", r"/{\1}", path)

    def _execute(self, method: str, path: str, params: dict[str, Any], fault: str | None) -> Answer:
        if fault == "server_error":
            raise FakeStripeError(500, "api_error", "An unknown error occurred", stored=True)
        with self.lock:
            route = self._route_pattern(path)
            parts = path.strip("/").split("/")
            if (method, route) == ("POST", "/v1/accounts"):
                return Answer(200, self._create_account(params))
            if (method, route) == ("GET", "/v1/accounts/{acct}"):
                return Answer(200, dict(self._account(parts[2])))
            if (method, route) == ("POST", "/v1/account_links"):
                return Answer(200, self._create_account_link(params))
            if (method, route) == ("POST", "/v1/transfers"):
                return Answer(200, self._expand(self._create_transfer(params), params))
            if (method, route) == ("GET", "/v1/transfers"):
                return Answer(200, self._list_transfers(params))
            if (method, route) == ("GET", "/v1/transfers/{tr}"):
                return Answer(200, self._expand(self._transfer(parts[2]), params))
            if (method, route) == ("POST", "/v1/transfers/{tr}/reversals"):
                return Answer(200, self._create_reversal(parts[2], params))
            if (method, route) == ("GET", "/v1/balance"):
                return Answer(200, self._balance())
            if (method, route) == ("GET", "/v1/balance_transactions"):
                return Answer(200, self._list("/v1/balance_transactions", self.balance_transactions, params))
            if (method, route) == ("GET", "/v1/balance_transactions/{txn}"):
                return Answer(200, self._get(self.balance_transactions, parts[2], "balance_transaction"))
            if (method, route) == ("GET", "/v1/events"):
                return Answer(200, self._list("/v1/events", self.events, params))
            if (method, route) == ("POST", "/v1/payment_intents"):
                return Answer(200, self._create_payment_intent(params))
            if (method, route) == ("GET", "/v1/payment_intents/{pi}"):
                return Answer(
                    200, self._expand(self._get(self.payment_intents, parts[2], "payment_intent"), params)
                )
        raise invalid(f"Unrecognized request URL ({method}: {path}).", status=404)

    # resources ------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._seq):06d}{uuid.uuid4().hex[:12]}"

    @staticmethod
    def _require(params: dict[str, Any], *names: str) -> None:
        for name in names:
            if params.get(name) in (None, ""):
                raise invalid(f"Missing required param: {name}.", code="parameter_missing", param=name)

    @staticmethod
    def _integer(params: dict[str, Any], name: str, *, minimum: int = 1) -> int:
        raw = params.get(name)
        if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw):
            raise invalid(f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name)
        value = int(raw)
        if value < minimum:
            raise invalid(f"This value must be greater than or equal to {minimum}.", param=name)
        return value

    @staticmethod
    def _currency(params: dict[str, Any]) -> str:
        raw = params.get("currency")
        if not isinstance(raw, str) or not re.fullmatch(r"[a-z]{3}", raw):
            raise invalid(
                f"Invalid currency: {raw}. Stripe currently supports these currencies: ...", param="currency"
            )
        return raw

    @staticmethod
    def _metadata(params: dict[str, Any]) -> dict[str, str]:
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > 50:
            raise invalid("Invalid metadata: up to 50 keys with string values.", param="metadata")
        for key, value in metadata.items():
            if len(key) > 40 or len(str(value)) > 500:
                raise invalid(
                    "Metadata keys are limited to 40 characters and values to 500.", param="metadata"
                )
        return {str(k): str(v) for k, v in metadata.items()}

    def _get(self, table: dict[str, dict[str, Any]], id_: str, what: str) -> dict[str, Any]:
        obj = table.get(id_)
        if obj is None:
            raise invalid(f"No such {what}: '{id_}'", code="resource_missing", param="id", status=404)
        return json.loads(json.dumps(obj))

    def _account(self, account_id: str) -> dict[str, Any]:
        return self._get(self.accounts, account_id, "account")

    def _transfer(self, transfer_id: str) -> dict[str, Any]:
        return self._get(self.transfers, transfer_id, "transfer")

    def _create_account(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "country")
        country = params["country"]
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise invalid(f"Country '{country}' is unknown.", param="country")
        currency = self._currency({"currency": params.get("default_currency", "eur")})
        requested = ((params.get("capabilities") or {}).get("transfers") or {}).get("requested")
        if requested != "true":
            raise invalid("Accounts must request the transfers capability.", param="capabilities")
        account = {
            "id": self._id("acct"),
            "object": "account",
            "business_type": None,
            "capabilities": {"transfers": "inactive"},
            "charges_enabled": False,
            "controller": params.get("controller") or {},
            "country": country,
            "created": self.now(),
            "default_currency": currency,
            "details_submitted": False,
            "email": params.get("email"),
            "metadata": self._metadata(params),
            "payouts_enabled": False,
            "requirements": {
                "currently_due": ["external_account", "tos_acceptance.date"],
                "disabled_reason": None,
            },
            "type": "none",
        }
        self.accounts[account["id"]] = account
        self.account_balances[account["id"]] = {}
        return dict(account)

    def _create_account_link(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "account", "type", "refresh_url", "return_url")
        self._account(params["account"])
        if params["type"] not in {"account_onboarding", "account_update"}:
            raise invalid(f"Invalid type: {params['type']}", param="type")
        created = self.now()
        return {
            "object": "account_link",
            "created": created,
            "expires_at": created + 300,
            "url": f"https://connect.stripe.com/setup/e/{params['account']}/{uuid.uuid4().hex[:12]}",
        }

    def _balance_transaction(
        self, *, amount: int, currency: str, type_: str, source: str | None, fee: int = 0
    ) -> dict[str, Any]:
        txn = {
            "id": self._id("txn"),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": self.now(),
            "created": self.now(),
            "currency": currency,
            "description": None,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": [{"amount": fee, "currency": currency, "type": "stripe_fee"}] if fee else [],
            "net": amount - fee,
            "reporting_category": {"transfer_refund": "transfer_reversal"}.get(type_, type_),
            "source": source or self._id("src"),
            "status": "available",
            "type": type_,
        }
        self.balance_transactions[txn["id"]] = txn
        return txn

    def _create_transfer(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "amount", "currency", "destination")
        amount = self._integer(params, "amount")
        currency = self._currency(params)
        metadata = self._metadata(params)
        destination = params["destination"]
        account = self.accounts.get(destination)
        if account is None:
            raise invalid(
                f"No such destination: '{destination}'", code="resource_missing", param="destination"
            )
        if account["capabilities"].get("transfers") != "active":
            raise invalid(
                "Your destination account needs to have at least one of the following capabilities enabled: "
                "transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="destination",
                stored=True,
            )
        if self.available.get(currency, 0) < amount:
            raise invalid(
                "You have insufficient available funds in your Stripe account.",
                code="balance_insufficient",
                stored=True,
            )
        self.available[currency] -= amount
        balances = self.account_balances[destination]
        balances[currency] = balances.get(currency, 0) + amount
        transfer_id = self._id("tr")
        txn = self._balance_transaction(
            amount=-amount, currency=currency, type_="transfer", source=transfer_id
        )
        transfer = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": txn["id"],
            "created": self.now(),
            "currency": currency,
            "description": params.get("description"),
            "destination": destination,
            "destination_payment": self._id("py"),
            "livemode": False,
            "metadata": metadata,
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": None,
            "source_type": "card",
            "transfer_group": params.get("transfer_group"),
        }
        self.transfers[transfer_id] = transfer
        self._event("transfer.created", transfer)
        return json.loads(json.dumps(transfer))

    def _create_reversal(self, transfer_id: str, params: dict[str, Any]) -> dict[str, Any]:
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            raise invalid(f"No such transfer: '{transfer_id}'", code="resource_missing", status=404)
        remaining = transfer["amount"] - transfer["amount_reversed"]
        amount = self._integer(params, "amount") if "amount" in params else remaining
        if amount > remaining:
            raise invalid("The reversal amount exceeds what is left of the transfer.", param="amount")
        metadata = self._metadata(params)
        currency = transfer["currency"]
        balances = self.account_balances[transfer["destination"]]
        if balances.get(currency, 0) < amount:
            raise invalid(
                "The destination account has insufficient funds for this reversal.",
                code="balance_insufficient",
                stored=True,
            )
        balances[currency] -= amount
        self.available[currency] = self.available.get(currency, 0) + amount
        reversal_id = self._id("trr")
        txn = self._balance_transaction(
            amount=amount, currency=currency, type_="transfer_refund", source=reversal_id
        )
        reversal = {
            "id": reversal_id,
            "object": "transfer_reversal",
            "amount": amount,
            "balance_transaction": txn["id"],
            "created": self.now(),
            "currency": currency,
            "destination_payment_refund": self._id("pyr"),
            "metadata": metadata,
            "source_refund": None,
            "transfer": transfer_id,
        }
        transfer["reversals"]["data"].insert(0, reversal)
        transfer["reversals"]["total_count"] += 1
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        self._event("transfer.reversed", transfer)
        return json.loads(json.dumps(reversal))

    def _balance(self) -> dict[str, Any]:
        return {
            "object": "balance",
            "available": [
                {"amount": amount, "currency": cur, "source_types": {"card": amount}}
                for cur, amount in sorted(self.available.items())
            ],
            "livemode": False,
            "pending": [{"amount": 0, "currency": cur} for cur in sorted(self.available)],
        }

    def _create_payment_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "amount", "currency")
        amount = self._integer(params, "amount")
        intent_id = self._id("pi")
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "client_secret": f"{intent_id}_secret_{uuid.uuid4().hex[:16]}",
            "created": self.now(),
            "currency": self._currency(params),
            "latest_charge": None,
            "livemode": False,
            "metadata": self._metadata(params),
            "status": "requires_payment_method",
        }
        self.payment_intents[intent_id] = intent
        return dict(intent)

    # lists, expansion, events ---------------------------------------------------------------------

    def _list_transfers(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("transfer_group")
        destination = params.get("destination")
        table = {
            k: t
            for k, t in self.transfers.items()
            if (group is None or t["transfer_group"] == group)
            and (destination is None or t["destination"] == destination)
        }
        page = self._list("/v1/transfers", table, params)
        return self._expand(page, params)

    def _list(self, url: str, table: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        limit = self._integer(params, "limit") if "limit" in params else 10
        if limit > 100:
            raise invalid("This value must be less than or equal to 100.", param="limit")
        items = list(reversed(table.values()))  # newest first, as Stripe lists
        created = params.get("created")
        if isinstance(created, dict):
            bounds = {op: int(v) for op, v in created.items()}
            items = [
                i
                for i in items
                if i["created"] >= bounds.get("gte", i["created"])
                and i["created"] > bounds.get("gt", i["created"] - 1)
                and i["created"] < bounds.get("lt", i["created"] + 1)
                and i["created"] <= bounds.get("lte", i["created"])
            ]
        for name in ("type",):
            if name in params:
                items = [i for i in items if i.get(name) == params[name]]
        if params.get("delivery_success") == "false":
            items = [i for i in items if i.get("pending_webhooks", 0) > 0]
        after = params.get("starting_after")
        if after:
            ids = [i["id"] for i in items]
            if after not in ids:
                raise invalid(f"No such object: '{after}'", param="starting_after")
            items = items[ids.index(after) + 1 :]
        data = [json.loads(json.dumps(i)) for i in items[:limit]]
        return {"object": "list", "data": data, "has_more": len(items) > limit, "url": url}

    def _expand(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        for path in params.get("expand") or []:
            self._expand_path(obj, path.split("."), path)
        return obj

    def _expand_path(self, node: Any, parts: list[str], full: str) -> None:
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(node, dict) and node.get("object") == "list":
            for item in node["data"]:
                self._expand_path(item, rest, full)
            return
        if not isinstance(node, dict) or head not in node:
            raise invalid(f"This property cannot be expanded ({full}).", param="expand")
        if rest:
            if head == "latest_charge" and isinstance(node[head], str):
                node[head] = json.loads(json.dumps(self.charges[node[head]]))
            self._expand_path(node[head], rest, full)
            return
        value = node[head]
        tables = {"balance_transaction": self.balance_transactions, "latest_charge": self.charges}
        if head in tables and isinstance(value, str):
            node[head] = json.loads(json.dumps(tables[head][value]))
        elif not isinstance(value, dict):
            raise invalid(f"This property cannot be expanded ({full}).", param="expand")

    def _event(
        self,
        type_: str,
        obj: dict[str, Any],
        *,
        account: str | None = None,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": self._id("evt"),
            "object": "event",
            "api_version": self.api_version,
            "created": self.now(),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        if previous is not None:
            event["data"]["previous_attributes"] = previous
        if account is not None:
            event["account"] = account
        self.events[event["id"]] = event
        return json.loads(json.dumps(event))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeStripeServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.fake.handle(self.command, self.path, headers, body)
        if answer.drop:
            # Close without a single byte of answer: the client sees the connection reset mid-request.
            self.close_connection = True
            return
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", "req_" + uuid.uuid4().hex[:14])
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        return


class FakeStripeServer(ThreadingHTTPServer):
    """`FakeStripe` listening on 127.0.0.1 at a free port, served from a daemon thread."""

    daemon_threads = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self._thread = threading.Thread(target=self.serve_forever, name="fake-stripe", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeStripeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def running(fake: FakeStripe) -> Iterator[FakeStripeServer]:
    """Serve `fake` for the duration of a fixture."""
    server = FakeStripeServer(fake).start()
    try:
        yield server
    finally:
        server.stop()
