"""A project's workforce: per annotator, what they did in the project, how well, how fast, and what it cost.

What Labelbox's performance view and Prolific's reward per hour give a manager, in one page per annotator:

- leases taken, live, released and expired (abandoned work);
- labels submitted, pending, accepted and rejected, the acceptance rate, and answers on gold items;
- time on task (each label's time from lease to submit, summed), seconds per label and labels per hour;
- from the ledger: what their labels earned, their bonuses, and everything the budget paid for their work
  (platform fees included), hence the cost per accepted label and the effective hourly pay;
- their standing: blocked or not, why and by whom, and the fast answers counted since the last unblock.

The money comes from posted ledger transactions that debited the project's budget and credited the annotator's
payable, so a gold answer that the project does not pay earns nothing here either, and a label paid after an
upheld appeal counts. Each page of annotators costs two statements: one for their leases and labels (one
snapshot, so the counts agree with each other however busy the project is) and one for their ledger entries
(read a moment later: a label accepted in between shows in the counts before its money). Both read through
indexes by annotator and by account, never a scan of the project: `bench/workforce.py` measures it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, literal, select, text, union_all
from sqlalchemy.orm import Session, aliased

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import KIND_BONUS, budget_account_code, payable_account_code
from marketplace.projects.models import Project
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker, ReviewState
from payments.models import Account, LedgerEntry, LedgerTransaction, TransactionStatus
from payments.money import Money


@dataclass(slots=True)
class WorkerPerformance:
    """One annotator in one project."""

    annotator_id: int
    name: str
    currency: str
    fast_answers: int
    blocked_at: datetime | None
    blocked_reason: str | None
    blocked_source: str | None
    blocked_by_id: int | None
    leases: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in AssignmentState})
    labels: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in ReviewState})
    gold_answered: int = 0
    gold_correct: int = 0
    active_ms: int = 0
    last_label_at: datetime | None = None
    earned_minor: int = 0
    bonuses_minor: int = 0
    #: everything the budget paid for this annotator's labels and bonuses, platform fees included
    cost_minor: int = 0

    @property
    def submitted(self) -> int:
        return sum(self.labels.values())

    @property
    def leased(self) -> int:
        """Leases ever taken in the project, whatever became of them."""
        return sum(self.leases.values())

    @property
    def acceptance_rate(self) -> float | None:
        decided = self.labels[ReviewState.ACCEPTED] + self.labels[ReviewState.REJECTED]
        return self.labels[ReviewState.ACCEPTED] / decided if decided else None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_answered if self.gold_answered else None

    @property
    def seconds_per_label(self) -> float | None:
        return self.active_ms / 1000 / self.submitted if self.submitted else None

    @property
    def labels_per_hour(self) -> float | None:
        return self.submitted * 3_600_000 / self.active_ms if self.active_ms else None

    @property
    def hourly_pay(self) -> Money | None:
        """What their labels earned per hour on task (bonuses apart)."""
        if not self.active_ms:
            return None
        return Money(round(self.earned_minor * 3_600_000 / self.active_ms), self.currency)

    @property
    def cost_per_accepted_label(self) -> Money | None:
        accepted = self.labels[ReviewState.ACCEPTED]
        return Money(round(self.cost_minor / accepted), self.currency) if accepted else None

    def to_json(self) -> dict[str, object]:
        def rate(value: float | None, digits: int = 4) -> float | None:
            return round(value, digits) if value is not None else None

        def money(value: Money | None) -> dict[str, object] | None:
            return value.to_json() if value is not None else None

        return {
            "annotator_id": self.annotator_id,
            "name": self.name,
            "status": "blocked" if self.blocked_at is not None else "active",
            "blocked_at": self.blocked_at.isoformat() if self.blocked_at else None,
            "blocked_reason": self.blocked_reason,
            "blocked_source": self.blocked_source,
            "blocked_by_id": self.blocked_by_id,
            "fast_answers": self.fast_answers,
            "leases": {"total": self.leased, **self.leases},
            "labels": {"submitted": self.submitted, **self.labels},
            "acceptance_rate": rate(self.acceptance_rate),
            "gold": {
                "answered": self.gold_answered,
                "correct": self.gold_correct,
                "accuracy": rate(self.gold_accuracy),
            },
            "time_on_task_seconds": round(self.active_ms / 1000, 1),
            "seconds_per_label": rate(self.seconds_per_label, 1),
            "labels_per_hour": rate(self.labels_per_hour, 1),
            "last_label_at": self.last_label_at.isoformat() if self.last_label_at else None,
            "earned": Money(self.earned_minor, self.currency).to_json(),
            "bonuses": Money(self.bonuses_minor, self.currency).to_json(),
            "cost": Money(self.cost_minor, self.currency).to_json(),
            "cost_per_accepted_label": money(self.cost_per_accepted_label),
            "hourly_pay": money(self.hourly_pay),
        }


def project_workforce(
    session: Session,
    *,
    project: Project,
    after: int = 0,
    limit: int = 100,
    annotator_id: int | None = None,
) -> list[WorkerPerformance]:
    """The project's annotators (everyone who took a lease in it) by id after `after`, with their numbers; or
    only `annotator_id`."""
    stmt = (
        select(ProjectWorker, AnnotatorProfile.display_name)
        .join(AnnotatorProfile, AnnotatorProfile.id == ProjectWorker.annotator_id)
        .where(ProjectWorker.project_id == project.id)
    )
    if annotator_id is not None:
        stmt = stmt.where(ProjectWorker.annotator_id == annotator_id)
    else:
        stmt = (
            stmt.where(ProjectWorker.annotator_id > after).order_by(ProjectWorker.annotator_id).limit(limit)
        )
    workers = {
        worker.annotator_id: WorkerPerformance(
            annotator_id=worker.annotator_id,
            name=name,
            currency=project.currency,
            fast_answers=worker.fast_answers,
            blocked_at=worker.blocked_at,
            blocked_reason=worker.blocked_reason,
            blocked_source=worker.blocked_source,
            blocked_by_id=worker.blocked_by_id,
        )
        for worker, name in session.execute(stmt)
    }
    if workers:
        if session.get_bind().dialect.name == "postgresql":
            # Plan for these annotators, every time: PostgreSQL's generic plan for a statement run again and again
            # (after ten runs on one connection) read the ledger query 8x slower (27 -> 210 ms a page in
            # bench/workforce.py), since how many entries a page's accounts hold is all in the values.
            session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        _add_work(session, project, workers)
        _add_money(session, project, workers)
    return list(workers.values())


def _add_work(session: Session, project: Project, workers: dict[int, WorkerPerformance]) -> None:
    """Leases by state, and labels by review state with time on task: one statement (one snapshot, so a lease or
    a submit committing meanwhile is counted in both or neither), two grouped reads through each table's index
    by annotator (joining labels to their assignments made PostgreSQL hash the project's labels whole)."""
    annotator_ids = list(workers)
    leases = (
        select(
            Assignment.annotator_id,
            literal("lease").label("kind"),
            Assignment.state,
            Assignment.is_gold,
            func.count().label("n"),
            (func.count() * 0).label("active_ms"),
            func.max(Assignment.leased_at).label("last"),
        )
        .where(Assignment.project_id == project.id, Assignment.annotator_id.in_(annotator_ids))
        .group_by(Assignment.annotator_id, Assignment.state, Assignment.is_gold)
    )
    labels = (
        select(
            Label.annotator_id,
            literal("label").label("kind"),
            Label.review_state,
            Label.is_gold,
            func.count().label("n"),
            func.coalesce(func.sum(Label.time_spent_ms), 0).label("active_ms"),
            func.max(Label.created_at).label("last"),
        )
        .where(Label.project_id == project.id, Label.annotator_id.in_(annotator_ids))
        .group_by(Label.annotator_id, Label.review_state, Label.is_gold)
    )
    for annotator_id, kind, state, is_gold, count, active_ms, last in session.execute(
        union_all(leases, labels)
    ):
        worker = workers[annotator_id]
        if kind == "lease":
            worker.leases[state] = worker.leases.get(state, 0) + int(count)
            continue
        worker.labels[state] = worker.labels.get(state, 0) + int(count)
        worker.active_ms += int(active_ms)
        if last is not None and (worker.last_label_at is None or last > worker.last_label_at):
            worker.last_label_at = last
        if is_gold and state != ReviewState.PENDING:
            worker.gold_answered += int(count)
            if state == ReviewState.ACCEPTED:
                worker.gold_correct += int(count)


def _add_money(session: Session, project: Project, workers: dict[int, WorkerPerformance]) -> None:
    """Earned, bonuses and cost: posted transactions that debited the project's budget and credited each
    annotator's payable (one budget debit per such transaction: the label's or the bonus's price plus fee)."""
    currency = project.currency
    codes = {payable_account_code(annotator_id): annotator_id for annotator_id in workers}
    accounts: dict[str, int] = dict(
        session.execute(
            select(Account.code, Account.id).where(
                Account.code.in_([*codes, budget_account_code(project.id)]), Account.currency == currency
            )
        ).all()
    )
    budget_id = accounts.pop(budget_account_code(project.id), None)
    if budget_id is None or not accounts:
        return
    annotator_of = {account_id: codes[code] for code, account_id in accounts.items()}
    paid = aliased(LedgerEntry)
    budget = aliased(LedgerEntry)
    totals: dict[tuple[int, bool], list[int]] = defaultdict(lambda: [0, 0])
    for account_id, kind, earned, cost in session.execute(
        select(
            paid.account_id,
            LedgerTransaction.kind,
            func.sum(paid.amount_minor),
            func.sum(budget.amount_minor),
        )
        .join(LedgerTransaction, LedgerTransaction.id == paid.transaction_id)
        .join(
            budget,
            and_(
                budget.transaction_id == paid.transaction_id,
                budget.account_id == budget_id,
                budget.direction == "debit",
            ),
        )
        .where(
            paid.account_id.in_(list(annotator_of)),
            paid.direction == "credit",
            LedgerTransaction.status == TransactionStatus.POSTED.value,
        )
        .group_by(paid.account_id, LedgerTransaction.kind)
    ):
        total = totals[(annotator_of[account_id], kind == KIND_BONUS)]
        total[0] += int(earned)
        total[1] += int(cost)
    for (annotator_id, is_bonus), (earned, cost) in totals.items():
        worker = workers[annotator_id]
        if is_bonus:
            worker.bonuses_minor += earned
        else:
            worker.earned_minor += earned
        worker.cost_minor += cost
