"""Gold (control) items: a label on one is checked against the known answer at once.

A correct answer is accepted (and paid if the project says so), a wrong one rejected with the expected answer in
the reason, so the annotator learns from it right away. Once an annotator has answered `gold_min_items` control
items in a project, a gold accuracy under `gold_accuracy_floor` blocks them from the project, and their live
leases in it are released at once: the items go back to qualified annotators now rather than when the leases
expire, and nothing more is bought from someone the controls say is guessing. Labels they already submitted
stay with the review policy. An appeal upheld on a control item counts it as correct and lifts a gold block
that no longer holds.

Lock order: the project-worker row first (the submitting annotator's own row; their concurrent requests are
already serialised on their profile row), then the leases being released (item rows, then the ledger), then
the decision's ledger rows: the same order as leasing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from marketplace.projects.label_schema import values_agree
from marketplace.projects.models import Project, Task
from marketplace.quality.accuracy import GOLD_WEIGHT
from marketplace.quality.outcomes import accept_and_record, reject_and_record
from marketplace.quality.workers import SOURCE_APPEAL, SOURCE_GOLD, block_worker, lift_block, lock_worker
from marketplace.work.models import Label, ProjectWorker

#: the start of every gold block's reason
BLOCK_PREFIX = "Gold accuracy"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _gold_params(project: Project) -> tuple[int, float]:
    params = project.review_params
    return int(params.get("gold_min_items", 5)), float(params.get("gold_accuracy_floor", 0.6))


def check_gold_label(session: Session, *, label: Label, project: Project, now: datetime) -> bool:
    """Decide a label on a gold item against its answer; True if it was right."""
    task = session.get_one(Task, label.task_id)
    correct = values_agree(project.label_schema, label.value, task.gold_answer)
    worker = lock_worker(session, project.id, label.annotator_id)
    if correct:
        worker.gold_correct += 1
    else:
        worker.gold_wrong += 1
    min_items, floor = _gold_params(project)
    seen = worker.gold_correct + worker.gold_wrong
    if worker.blocked_at is None and seen >= min_items and worker.gold_correct / seen < floor:
        _block(session, worker=worker, project=project, floor=floor, now=now)
    if correct:
        accept_and_record(
            session,
            label=label,
            now=now,
            source="gold",
            pay=bool(project.review_params.get("pay_correct_gold", True)),
            accuracy_weight=GOLD_WEIGHT,
        )
    else:
        reject_and_record(
            session,
            label=label,
            reason=f"wrong answer on a control item: expected {_shown(task.gold_answer)}",
            now=now,
            source="gold",
            accuracy_weight=GOLD_WEIGHT,
        )
    return correct


def _block(session: Session, *, worker: ProjectWorker, project: Project, floor: float, now: datetime) -> None:
    seen = worker.gold_correct + worker.gold_wrong
    reason = (
        f"{BLOCK_PREFIX} {worker.gold_correct / seen:.0%} is below the project's floor of {floor:.0%} "
        f"after {seen} control items."
    )
    block_worker(session, worker=worker, project=project, reason=reason, source=SOURCE_GOLD, now=now)


def overturn_gold_miss(session: Session, *, label: Label, project: Project, now: datetime) -> None:
    """Count a gold answer rejected as wrong as right after all (upheld appeal or reversal); lift a gold block
    that no longer holds (never a block for another cause)."""
    worker = lock_worker(session, project.id, label.annotator_id)
    worker.gold_wrong = max(worker.gold_wrong - 1, 0)
    worker.gold_correct += 1
    min_items, floor = _gold_params(project)
    seen = worker.gold_correct + worker.gold_wrong
    if (
        worker.blocked_at is not None
        and worker.blocked_source == SOURCE_GOLD
        and (seen < min_items or worker.gold_correct / seen >= floor)
    ):
        lift_block(session, worker=worker, project=project, source=SOURCE_APPEAL, now=now)
