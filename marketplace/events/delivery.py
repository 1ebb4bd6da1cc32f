"""Webhook delivery: signed POSTs of outbox events to each project's URL, retried with exponential backoff.

Delivery is at least once and in no guaranteed order: receivers de-duplicate by event `id` and, to see a stream
in order or catch up after downtime, read `GET /api/v1/events` from their last `sequence`.

No database transaction stays open during an HTTP call. A worker *claims* due deliveries in one short
transaction (each claim pushes `next_attempt_at` out by `CLAIM`, so a crashed worker's deliveries come back on
their own and a second worker skips them), sends them, and records the outcomes in a second transaction.

Signature: `Labelforce-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the project's
secret>`; receivers recompute it and reject a timestamp older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.events.models import DeliveryState, Event, WebhookDelivery
from marketplace.events.services import event_dict, webhook_secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Labelforce-Signature"
#: attempts before a delivery is given up as failed (about two days of backoff)
MAX_ATTEMPTS = 12
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
#: how long a claimed delivery is hidden from other workers while it is being sent
CLAIM = timedelta(minutes=2)
TIMEOUT_SECONDS = 10.0
#: deliveries sent at once by one worker
SENDERS = 8
USER_AGENT = "Labelforce-Webhooks/1"


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, ... capped at 6 hours."""
    return min(BACKOFF_BASE * 2 ** max(attempts - 1, 0), BACKOFF_CAP)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """Whether `header` signs `body` with `secret` within `tolerance` seconds of `now` (for receivers)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True, slots=True)
class Outbound:
    """A claimed delivery, ready to send."""

    delivery_id: int
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the receiver answered: a status, or an error before any status."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def claim_due(session: Session, *, now: datetime, limit: int) -> list[Outbound]:
    """Claim up to `limit` due deliveries and build their signed requests (the caller commits the claim)."""
    stmt = (
        select(WebhookDelivery, Event)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(
            WebhookDelivery.state == DeliveryState.PENDING.value,
            WebhookDelivery.next_attempt_at <= now,
            Event.seq.is_not(None),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=WebhookDelivery)
    claimed: list[Outbound] = []
    for delivery, event in session.execute(stmt).tuples():
        delivery.attempts += 1
        delivery.next_attempt_at = now + CLAIM
        body = json.dumps(event_dict(event), separators=(",", ":"), sort_keys=True).encode()
        secret = webhook_secret(session, project_id=delivery.project_id).secret
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, body, int(now.timestamp())),
            "Labelforce-Event-Id": str(event.id),
            "Labelforce-Event-Type": event.type,
            "Labelforce-Delivery-Attempt": str(delivery.attempts),
        }
        claimed.append(Outbound(delivery.id, delivery.url, body, headers))
    session.flush()
    return claimed


def record_outcome(session: Session, *, delivery_id: int, outcome: Outcome, now: datetime) -> WebhookDelivery:
    """Mark a delivery delivered, or schedule its retry with backoff (failed after MAX_ATTEMPTS)."""
    delivery = session.get_one(WebhookDelivery, delivery_id, with_for_update=True, populate_existing=True)
    delivery.last_status = outcome.status
    delivery.last_error = outcome.error[:2000] if outcome.error else None
    if outcome.ok:
        delivery.state = DeliveryState.DELIVERED.value
        delivery.delivered_at = now
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.state = DeliveryState.FAILED.value
    else:
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    session.flush()
    return delivery


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect is an answer like any other non-2xx one: following it would send the signed body elsewhere.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _private_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # the POST fails on its own and is retried
    return any(not ipaddress.ip_address(str(a).split("%", 1)[0]).is_global for a in addresses)


def http_post(request: Outbound, *, timeout: float = TIMEOUT_SECONDS, allow_private: bool = True) -> Outcome:
    """POST one delivery with the standard library; never raises."""
    if urlsplit(request.url).scheme not in {"http", "https"}:
        return Outcome(None, "the webhook URL must be http or https")
    if not allow_private and _private_host(request.url):
        return Outcome(None, "the webhook URL resolves to a private address")
    req = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")  # noqa: S310  (scheme checked above)
    try:
        with _opener.open(req, timeout=timeout) as response:
            return Outcome(int(response.status))
    except urllib.error.HTTPError as exc:
        return Outcome(int(exc.code), f"HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one delivery pass did."""

    attempted: int
    delivered: int
    retrying: int
    failed: int


def deliver_due(
    open_session: Callable[[], AbstractContextManager[Session]],
    *,
    now: Callable[[], datetime],
    limit: int = 100,
    post: Callable[[Outbound], Outcome] = http_post,
) -> DeliveryReport:
    """Claim due deliveries, send them, record the outcomes: two short transactions around the HTTP calls."""
    with open_session() as session:
        claimed = claim_due(session, now=now(), limit=limit)
    # In parallel: one slow or unreachable receiver must not hold up everyone else's deliveries.
    with ThreadPoolExecutor(max_workers=max(1, min(SENDERS, len(claimed)))) as pool:
        outcomes = list(zip(claimed, pool.map(post, claimed), strict=True))
    delivered = retrying = failed = 0
    with open_session() as session:
        for request, outcome in outcomes:
            delivery = record_outcome(session, delivery_id=request.delivery_id, outcome=outcome, now=now())
            if delivery.state == DeliveryState.DELIVERED:
                delivered += 1
            elif delivery.state == DeliveryState.FAILED:
                failed += 1
                log.warning("webhook delivery %s failed for good: %s", delivery.id, delivery.last_error)
            else:
                retrying += 1
    return DeliveryReport(len(claimed), delivered, retrying, failed)
