"""Stripe webhooks: verified and stored once by event id, answered at once, processed afterwards.

Stripe delivers an event at least once, retries for days and does not keep order, so:

- `receive_event` verifies the signature over the raw body (and the timestamp, both ways), then inserts the
  event keyed by its id; a second delivery of the same id changes nothing. The HTTP view answers 2xx as soon
  as this is stored.
- `process_event` runs later (a job, or right after the request's commit) and is idempotent and
  order-insensitive: transfer and account events re-fetch the object from the gateway and apply its current
  state (so an old event cannot undo a newer one); bank payout events only move forward by rank (a payout
  that failed after showing paid stays failed, whichever event arrives first); money is booked under
  idempotency keys derived from gateway ids.
- Other event types are stored and marked ignored, unless the product registered a handler for them with
  `register_handler`. Funding (`payment_intent.succeeded`) needs one: `payments` cannot credit a budget it
  does not know, so the marketplace registers a handler that calls its own funding service.

Funding through Stripe is asked for here too (`request_funding`): the PaymentIntent is created with the
payee's reference in its metadata, and the budget is credited only when Stripe confirms the payment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from payments import ledger, payout_outcomes, payouts
from payments.db import utcnow
from payments.errors import IdempotencyConflict, PayoutError
from payments.gateways.base import FundingResult, PayoutGateway, WebhookEvent
from payments.gateways.stripe import funding_from, verify_webhook
from payments.money import Money
from payments.payout_models import EventStatus, StripeBankPayout, StripeEvent, StripeFunding
from payments.payout_runs import Clock, SessionScope

EventHandler = Callable[[Session, WebhookEvent], None]

FUNDING_CLEARING_ACCOUNT = "clearing:stripe_funding"
GATEWAY_FEES_ACCOUNT = "platform:stripe_fees"
KIND_FUNDING_SETTLEMENT = "funding_settlement"
FUNDING_EVENTS = frozenset({"payment_intent.succeeded"})
TRANSFER_EVENTS = frozenset({"transfer.created", "transfer.updated", "transfer.reversed"})
BANK_PAYOUT_EVENTS = frozenset(
    {"payout.created", "payout.updated", "payout.paid", "payout.failed", "payout.canceled"}
)
#: a bank payout's status only moves up this ladder: `failed` after `paid` wins, `paid` after `failed` does not
BANK_PAYOUT_RANK = {"pending": 0, "in_transit": 1, "paid": 2, "failed": 3, "canceled": 3}


class HandlerRegistry:
    """Handlers the product adds per event type, run in the event's processing transaction after ours."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}

    def register(self, event_type: str, fn: EventHandler) -> None:
        """Also run `fn(session, event)` for every `event_type` event (once, however often registered)."""
        handlers = self._handlers.setdefault(event_type, [])
        if fn not in handlers:
            handlers.append(fn)

    def unregister(self, event_type: str, fn: EventHandler) -> None:
        """Stop running `fn` for `event_type` events."""
        if fn in self._handlers.get(event_type, []):
            self._handlers[event_type].remove(fn)

    def handlers(self, event_type: str) -> list[EventHandler]:
        """The handlers of `event_type`, in registration order."""
        return list(self._handlers.get(event_type, []))


#: the process-wide registry the app registers into (tests may pass a registry of their own)
default_registry = HandlerRegistry()


def register_handler(event_type: str, fn: EventHandler) -> None:
    """Also run `fn(session, event)` for every `event_type` event, in the event's processing transaction."""
    default_registry.register(event_type, fn)


def unregister_handler(event_type: str, fn: EventHandler) -> None:
    """Stop running `fn` for `event_type` events."""
    default_registry.unregister(event_type, fn)


def registered_handlers(event_type: str) -> list[EventHandler]:
    """The handlers registered for `event_type`, in registration order."""
    return default_registry.handlers(event_type)


# --- receiving ----------------------------------------------------------------------------------------------


def receive_event(
    session: Session,
    *,
    payload: bytes,
    signature_header: str | None,
    secret: str,
    now: datetime | None = None,
) -> tuple[StripeEvent, bool]:
    """Verify and store an event; returns the stored row and whether this delivery was the first."""
    event = verify_webhook(payload=payload, signature_header=signature_header, secret=secret, now=now)
    values: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "account": event.account,
        "livemode": event.livemode,
        "api_version": event.api_version,
        "created": event.created,
        "payload": event.payload,
        "status": EventStatus.PENDING.value,
        "attempts": 0,
        "received_at": now or utcnow(),
    }
    # ON CONFLICT DO NOTHING: two deliveries of one event racing each other both succeed, one row results.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted = session.execute(
        insert(StripeEvent)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)
    ).scalar_one_or_none()
    created = inserted is not None
    row = session.get_one(StripeEvent, event.id, populate_existing=True)
    return row, created


def event_from_row(row: StripeEvent) -> WebhookEvent:
    """The stored event as the handlers see it."""
    payload = row.payload
    obj = (payload.get("data") or {}).get("object")
    return WebhookEvent(
        id=row.id,
        type=row.type,
        created=row.created,
        object=obj if isinstance(obj, dict) else {},
        account=row.account,
        livemode=row.livemode,
        api_version=row.api_version,
        payload=payload,
    )


# --- processing ---------------------------------------------------------------------------------------------


def process_event(
    session: Session,
    *,
    event_id: str,
    gateway: PayoutGateway,
    now: datetime,
    registry: HandlerRegistry | None = None,
) -> str:
    """Apply one stored event (once; a processed or ignored event is left alone); returns its status."""
    registry = registry or default_registry
    row = session.scalars(
        select(StripeEvent)
        .where(StripeEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise PayoutError(f"no stored event {event_id}", details={"event_id": event_id})
    if row.status != EventStatus.PENDING:
        return row.status
    event = event_from_row(row)
    handled = _builtin(session, event, gateway=gateway, now=now, registry=registry)
    extra = registry.handlers(event.type) if handled is not False else []
    for fn in extra:
        fn(session, event)
    row.attempts += 1
    row.status = (EventStatus.PROCESSED if handled or extra else EventStatus.IGNORED).value
    row.processed_at = now
    row.last_error = None
    session.flush()
    return row.status


def _builtin(
    session: Session, event: WebhookEvent, *, gateway: PayoutGateway, now: datetime, registry: HandlerRegistry
) -> bool | None:
    """True: handled; None: no built-in for this type; False: not ours, skip the registered handlers too."""
    if event.type in TRANSFER_EVENTS:
        return _on_transfer(session, event, gateway=gateway, now=now)
    if event.type == "account.updated":
        return _on_account(session, event, gateway=gateway)
    if event.type in BANK_PAYOUT_EVENTS:
        return _on_bank_payout(session, event)
    if event.type in FUNDING_EVENTS:
        return _on_funding(session, event, gateway=gateway, now=now, registry=registry)
    if event.type == "payment_intent.payment_failed":
        return _on_funding_failed(session, event)
    return None


def _on_transfer(session: Session, event: WebhookEvent, *, gateway: PayoutGateway, now: datetime) -> bool:
    # Re-fetch: the event's copy may be older than what we already applied, and it lacks the expanded balance
    # transaction and reversals that the ledger entries need.
    transfer = gateway.retrieve_transfer(str(event.object.get("id")))
    if transfer is None:
        return False
    return payout_outcomes.sync_transfer(session, transfer=transfer, now=now) is not None


def _on_account(session: Session, event: WebhookEvent, *, gateway: PayoutGateway) -> bool:
    account = gateway.retrieve_account(str(event.object.get("id")))
    return payouts.sync_payout_account(session, account=account) is not None


def _on_bank_payout(session: Session, event: WebhookEvent) -> bool:
    obj = event.object
    status = str(obj.get("status"))
    if status not in BANK_PAYOUT_RANK or not event.account:
        return False
    currency = str(obj.get("currency", "")).upper()
    arrival = obj.get("arrival_date")
    # Insert-or-nothing, then lock: two events of a new payout processed at once (paid and failed, say) both
    # reach the row, the second after the first's commit, and the ranks decide (failed beats paid).
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(StripeBankPayout)
        .values(id=str(obj["id"]), account=event.account, status=status, amount_minor=0, currency=currency)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    row = session.get_one(StripeBankPayout, str(obj["id"]), with_for_update=True, populate_existing=True)
    if BANK_PAYOUT_RANK[status] < BANK_PAYOUT_RANK[row.status]:
        return True
    row.status = status
    row.amount_minor = int(obj.get("amount") or 0)
    row.currency = currency
    row.failure_code = obj.get("failure_code")
    row.arrival_at = datetime.fromtimestamp(int(arrival), UTC) if arrival else None
    session.flush()
    return True


@dataclass(frozen=True)
class FundingConfirmed:
    """Stripe confirmed a funding: `amount` for `reference` (`project:3`), identified by `gateway_id`."""

    reference: str
    amount: Money
    gateway_id: str
    event_id: str
    metadata: dict[str, str] = field(default_factory=dict)


def funding_confirmation(event: WebhookEvent) -> FundingConfirmed:
    """The funding a `payment_intent.succeeded` event confirms; PayoutError if it is not one of ours."""
    if event.type not in FUNDING_EVENTS:
        raise PayoutError(f"{event.type} does not confirm a funding")
    funding = funding_from(event.object)
    reference = funding.metadata.get("reference")
    if not reference:
        raise PayoutError(f"payment intent {funding.id} carries no reference", details={"event_id": event.id})
    return FundingConfirmed(
        reference=reference,
        amount=funding.amount,
        gateway_id=funding.id,
        event_id=event.id,
        metadata=funding.metadata,
    )


def _on_funding(
    session: Session, event: WebhookEvent, *, gateway: PayoutGateway, now: datetime, registry: HandlerRegistry
) -> bool:
    if not (event.object.get("metadata") or {}).get("reference"):
        return False  # a payment made outside Labelforce's funding flow
    confirmation = funding_confirmation(event)
    if not registry.handlers(event.type):
        # Leave the event pending (the failure is recorded) rather than drop money nobody credited.
        raise PayoutError(f"no handler is registered for {event.type}: the funding cannot be credited")
    row = session.scalars(
        select(StripeFunding).where(StripeFunding.gateway_id == confirmation.gateway_id).with_for_update()
    ).one_or_none()
    if row is not None:
        if row.amount_minor != confirmation.amount.amount or row.currency != confirmation.amount.currency:
            raise PayoutError(
                f"payment intent {row.gateway_id} confirmed {confirmation.amount.format()}, "
                f"not the {Money(row.amount_minor, row.currency).format()} asked",
                details={"funding_id": row.id},
            )
        row.status = "succeeded"
        row.confirmed_at = row.confirmed_at or now
    fresh = gateway.retrieve_funding(confirmation.gateway_id)
    settlement = _settle_funding(session, confirmation=confirmation, fresh=fresh)
    if row is not None and settlement is not None:
        row.settlement_transaction_id = settlement
    session.flush()
    return True


def _settle_funding(
    session: Session, *, confirmation: FundingConfirmed, fresh: FundingResult | None
) -> int | None:
    # The registered handler books the funding into `clearing:stripe_funding`; Stripe's balance transaction
    # for the charge moves it on into the platform balance, less Stripe's fee.
    txn = fresh.balance_transaction if fresh is not None else None
    amount = confirmation.amount
    if txn is None or txn.currency != amount.currency or txn.amount_minor != amount.amount:
        return None
    currency = amount.currency
    ledger.ensure_account(session, code=FUNDING_CLEARING_ACCOUNT, currency=currency, kind="asset")
    ledger.ensure_account(session, code=payouts.GATEWAY_BALANCE_ACCOUNT, currency=currency, kind="asset")
    legs = [ledger.credit(FUNDING_CLEARING_ACCOUNT, amount)]
    if txn.net_minor > 0:
        legs.append(ledger.debit(payouts.GATEWAY_BALANCE_ACCOUNT, Money(txn.net_minor, currency)))
    if txn.fee_minor > 0:
        ledger.ensure_account(session, code=GATEWAY_FEES_ACCOUNT, currency=currency, kind="expense")
        legs.append(ledger.debit(GATEWAY_FEES_ACCOUNT, Money(txn.fee_minor, currency)))
    posting = ledger.post_transaction(
        session,
        idempotency_key=f"stripe:funding:{confirmation.gateway_id}:settlement",
        kind=KIND_FUNDING_SETTLEMENT,
        reference=confirmation.reference,
        legs=legs,
        metadata={"balance_transaction": txn.id, "payment_intent": confirmation.gateway_id},
    )
    return posting.id


def _on_funding_failed(session: Session, event: WebhookEvent) -> bool:
    row = session.scalars(
        select(StripeFunding).where(StripeFunding.gateway_id == str(event.object.get("id"))).with_for_update()
    ).one_or_none()
    if row is None:
        return False
    if row.status == "requested":  # a later success wins over an earlier failed attempt, never the reverse
        row.status = "failed"
    return True


def record_event_failure(session: Session, *, event_id: str, error: BaseException) -> None:
    """Note a failed processing attempt; the event stays pending and is tried again later."""
    row = session.get(StripeEvent, event_id, with_for_update=True, populate_existing=True)
    if row is None or row.status != EventStatus.PENDING:
        return
    row.attempts += 1
    row.last_error = f"{type(error).__name__}: {error}"[:2000]
    session.flush()


def pending_event_ids(session: Session, *, limit: int = 500) -> list[str]:
    """Stored events not processed yet, in the order Stripe created them."""
    return list(
        session.scalars(
            select(StripeEvent.id)
            .where(StripeEvent.status == EventStatus.PENDING.value)
            .order_by(StripeEvent.created, StripeEvent.received_at, StripeEvent.id)
            .limit(limit)
        )
    )


@dataclass
class EventsReport:
    """What a pass over the pending events did."""

    processed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def process_pending_events(
    scope: SessionScope,
    *,
    gateway: PayoutGateway,
    clock: Clock = utcnow,
    limit: int = 500,
    registry: HandlerRegistry | None = None,
) -> EventsReport:
    """Process every pending event, each in its own transaction; a failure is recorded and the pass goes on."""
    report = EventsReport()
    with scope() as session:
        event_ids = pending_event_ids(session, limit=limit)
    for event_id in event_ids:
        status = process_one_event(scope, event_id=event_id, gateway=gateway, clock=clock, registry=registry)
        if status == EventStatus.PROCESSED:
            report.processed.append(event_id)
        elif status == EventStatus.IGNORED:
            report.ignored.append(event_id)
        else:
            report.failed[event_id] = status
    return report


def process_one_event(
    scope: SessionScope,
    *,
    event_id: str,
    gateway: PayoutGateway,
    clock: Clock = utcnow,
    registry: HandlerRegistry | None = None,
) -> str:
    """Process one event in its own transaction; on failure record it (in another) and return the error."""
    try:
        with scope() as session:
            return process_event(session, event_id=event_id, gateway=gateway, now=clock(), registry=registry)
    except Exception as exc:
        # Whatever went wrong, the event stays pending: the failure is recorded and the next pass retries it.
        with scope() as session:
            record_event_failure(session, event_id=event_id, error=exc)
        return f"{type(exc).__name__}: {exc}"


# --- funding ------------------------------------------------------------------------------------------------


def request_funding(
    session: Session, *, gateway: PayoutGateway, reference: str, amount: Money, idempotency_key: str
) -> tuple[StripeFunding, FundingResult]:
    """Ask Stripe for `amount` for `reference` (a PaymentIntent); the client pays with its `client_secret`.

    Nothing is booked now: the budget is credited by the `payment_intent.succeeded` handler. The same key
    gives the same PaymentIntent (Stripe replays it), and the same row.
    """
    if amount.amount <= 0:
        raise PayoutError("a funding is a positive amount")
    _refuse_other_funding(_stored_funding(session, idempotency_key), reference=reference, amount=amount)
    result = gateway.create_funding(
        amount=amount,
        reference=reference,
        idempotency_key=f"funding:{idempotency_key}",
        metadata={"funding_key": idempotency_key[:500]},
    )
    row = _stored_funding(session, idempotency_key)
    if row is None:
        row = StripeFunding(
            reference=reference,
            idempotency_key=idempotency_key,
            gateway_id=result.id,
            amount_minor=amount.amount,
            currency=amount.currency,
            status="requested",
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()  # generate row.id; a concurrent retry's row is refused here
        except IntegrityError:
            # The same request at the same moment: Stripe gave both the same PaymentIntent, and the other one
            # recorded it first (this insert waited for its commit).
            row = _stored_funding(session, idempotency_key)
            if row is None:
                raise
    _refuse_other_funding(row, reference=reference, amount=amount)
    return row, result


def _stored_funding(session: Session, idempotency_key: str) -> StripeFunding | None:
    return session.scalars(
        select(StripeFunding).where(StripeFunding.idempotency_key == idempotency_key)
    ).one_or_none()


def _refuse_other_funding(row: StripeFunding | None, *, reference: str, amount: Money) -> None:
    """IdempotencyConflict if the key's funding asked for something else (Stripe would refuse the same)."""
    if row is None:
        return
    if (row.reference, row.amount_minor, row.currency) != (reference, amount.amount, amount.currency):
        raise IdempotencyConflict(
            "This key already asked for another funding; a retry sends the same amount.",
            details={"amount_minor": row.amount_minor, "currency": row.currency},
        )
