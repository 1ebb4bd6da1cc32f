"""The review policy's dispatch: what happens to a label the moment it is submitted.

Called by the submit endpoint in the submit's transaction, right after the label is created. A label on a gold
item is checked against the answer whatever the policy; otherwise `gold` accepts at once (the gold stream
guards quality), `consensus` decides the item when its labels are all in, and `manual` queues the label for a
reviewer. A label submitted faster than the project's `min_seconds_per_label` counts towards a fast-answer block
(`marketplace.quality.workers`) and, under `gold` and `manual`, waits for a reviewer with that reason: it is not
accepted unseen; consensus decides it with the rest of its item. The submission is also recorded: its outbox
event, the live counters and the annotator's measured speed.
"""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.events.services import record_event
from marketplace.projects.models import Project, ReviewPolicy
from marketplace.quality import consensus, gold
from marketplace.quality.outcomes import accept_and_record
from marketplace.quality.review import queue_for_review
from marketplace.quality.workers import fast_answer_reason, note_fast_answer
from marketplace.throughput.counters import record_label_submitted
from marketplace.throughput.services import update_measured_speed
from marketplace.work.models import Label

MANUAL_REASON = "review policy"


def review_submitted_label(
    session: Session, *, label: Label, now: datetime, fee_bps: int | None = None
) -> None:
    """Apply the project's review policy to a just-submitted label (fee_bps: the app's PLATFORM_FEE_BPS by default)."""
    project = session.get_one(Project, label.project_id)
    record_event(
        session,
        project_id=project.id,
        type="assignment.submitted",
        data={
            "assignment_id": label.assignment_id,
            "task_id": label.task_id,
            "annotator_id": label.annotator_id,
            "label_id": label.id,
        },
        now=now,
    )
    record_label_submitted(session, label=label, now=now)
    update_measured_speed(session, annotator=session.get_one(AnnotatorProfile, label.annotator_id))
    fast = note_fast_answer(session, label=label, project=project, now=now)
    if label.is_gold:
        gold.check_gold_label(session, label=label, project=project, now=now)
    elif project.review_policy == ReviewPolicy.CONSENSUS:
        bps = fee_bps if fee_bps is not None else int(current_app.config["PLATFORM_FEE_BPS"])
        consensus.evaluate_item(session, project=project, task_id=label.task_id, now=now, fee_bps=bps)
    elif project.review_policy == ReviewPolicy.GOLD and not fast:
        accept_and_record(session, label=label, now=now, source="policy")
    else:
        reason = fast_answer_reason(label, project) if fast else MANUAL_REASON
        queue_for_review(session, label=label, project=project, now=now, reason=reason, new_label=True)
