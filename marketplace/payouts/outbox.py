"""Payout events for the marketplace's outbox, written in the same transaction as the payout's state change.

`payments` knows nothing of the outbox; an attribute listener on `Payout.state` lets the marketplace observe the
transition where it happens, whichever loop or webhook made it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import object_session

from marketplace.events.services import record_event
from payments.money import Money
from payments.payout_models import Payout, PayoutState

_EVENT_FOR_STATE = {PayoutState.SETTLED.value: "payout.sent", PayoutState.FAILED.value: "payout.failed"}


@event.listens_for(Payout.state, "set")
def _record_payout_outcome(target: Payout, value: Any, oldvalue: Any, _initiator: Any) -> None:
    event_type = _EVENT_FOR_STATE.get(value)
    session = object_session(target)
    if event_type is None or value == oldvalue or session is None:
        return
    kind, _, ident = (target.payee_reference or "").partition(":")
    data: dict[str, Any] = {
        "payout_id": target.id,
        "annotator_id": int(ident) if kind == "annotator" and ident.isdigit() else None,
        "amount": Money(target.amount_minor, target.currency).to_json(),
    }
    if event_type == "payout.failed":
        data["reason"] = target.last_error
    record_event(session, project_id=None, type=event_type, data=data)
