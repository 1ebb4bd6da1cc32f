"""Speed, progress and forecasts: measured labels per hour, project progress with ETAs and risks, annotator stats.

Speed is measured from active time: the union of the intervals between leasing and submitting, so an annotator
who holds several leases at once is not counted as slower for it. Forecasts divide the labels still to be
submitted by a rate: the project's recent pace, or the whole eligible workforce's declared or measured speed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis as redis_lib
from sqlalchemy import bindparam, case, exists, func, select
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus
from marketplace.annotators.services import label_counts
from marketplace.billing.services import label_cost, project_budget
from marketplace.projects.models import Project, ProjectStatus, Task, TaskStatus
from marketplace.throughput.counters import WindowCount, window_counts
from marketplace.work.models import Assignment, Label, ProjectWorker, ReviewState
from payments.money import Money

#: how many of an annotator's latest labels their measured speed is taken over
SPEED_SAMPLE = 50
#: fewer labels than this say too little: the declared speed stays in use
SPEED_MIN_LABELS = 3
#: the range the API accepts for a declared speed; a measurement is kept inside it too
SPEED_RANGE = (0.1, 10_000.0)
EARNINGS_DAYS = 30

RISK_MESSAGES = {
    "no_workforce": "No active annotator qualifies for this project.",
    "deadline_unreachable": "Even the whole eligible workforce would finish after the deadline.",
    "behind_pace": "At the current pace the project finishes after the deadline.",
    "budget_short": "The available budget cannot pay for the remaining labels.",
    "deadline_passed": "The deadline has passed with labels still missing.",
}


def active_seconds(intervals: Iterable[tuple[datetime, datetime]]) -> float:
    """The length of the union of the intervals, in seconds (overlapping leases count once)."""
    total = 0.0
    current_start: datetime | None = None
    current_end: datetime | None = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_start is not None and current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    if current_start is not None and current_end is not None:
        total += (current_end - current_start).total_seconds()
    return total


#: the lease and submit times of an annotator's latest labels
_LATEST_INTERVALS = (
    select(Assignment.leased_at, Label.created_at)
    .join(Assignment, Assignment.id == Label.assignment_id)
    .where(Label.annotator_id == bindparam("annotator_id"))
    .order_by(Label.id.desc())
    .limit(SPEED_SAMPLE)
)


def update_measured_speed(session: Session, *, annotator: AnnotatorProfile) -> float | None:
    """Re-measure the annotator's labels per hour over their latest labels; stored for the planner."""
    rows = session.execute(_LATEST_INTERVALS, {"annotator_id": annotator.id}).tuples()
    intervals = [(leased, max(submitted, leased)) for leased, submitted in rows]
    if len(intervals) < SPEED_MIN_LABELS:
        return annotator.measured_labels_per_hour
    # A label submitted within the same second as its lease still took some time: a floor of one second each.
    seconds = max(active_seconds(intervals), float(len(intervals)))
    rate = min(max(len(intervals) * 3600.0 / seconds, SPEED_RANGE[0]), SPEED_RANGE[1])
    annotator.measured_labels_per_hour = round(rate, 2)
    return annotator.measured_labels_per_hour


# --- project progress -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workforce:
    """Annotators who could work on a project now, and how fast they are together."""

    annotators: int
    labels_per_hour: float


def eligible_workforce(
    session: Session, *, project: Project, now: datetime, seen_window: timedelta
) -> Workforce:
    """Active, recently seen annotators who qualify (skill level, price, currency, not blocked, some capacity)."""
    level = (
        select(AnnotatorSkill.level)
        .where(
            AnnotatorSkill.annotator_id == AnnotatorProfile.id, AnnotatorSkill.skill_id == project.skill_id
        )
        .scalar_subquery()
    )
    blocked = exists().where(
        ProjectWorker.project_id == project.id,
        ProjectWorker.annotator_id == AnnotatorProfile.id,
        ProjectWorker.blocked_at.is_not(None),
    )
    count, speed = session.execute(
        select(
            func.count(),
            func.coalesce(
                func.sum(
                    func.coalesce(AnnotatorProfile.measured_labels_per_hour, AnnotatorProfile.labels_per_hour)
                ),
                0.0,
            ),
        ).where(
            AnnotatorProfile.status == AnnotatorStatus.ACTIVE.value,
            AnnotatorProfile.last_seen_at >= now - seen_window,
            AnnotatorProfile.currency == project.currency,
            AnnotatorProfile.price_minor <= project.pay_per_label_minor,
            AnnotatorProfile.capacity > 0,
            level >= project.min_level,
            ~blocked,
        )
    ).one()
    return Workforce(int(count), float(speed))


def _eta(now: datetime, labels: int, per_hour: float) -> datetime | None:
    if labels <= 0:
        return now
    if per_hour <= 0:
        return None
    return now + timedelta(hours=labels / per_hour)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a project stands, how fast it moves, when it will finish and what threatens that."""

    project: Project
    now: datetime
    items_total: int
    items_complete: int
    labels_needed: int
    labels_accepted: int
    labels_in_progress: int
    labels_awaiting_review: int
    labels_to_submit: int
    throughput: list[WindowCount]
    throughput_source: str
    pace_per_hour: float
    workforce: Workforce
    eta_at_pace: datetime | None
    eta_at_capacity: datetime | None
    budget: dict[str, Any]
    cost_of_remaining: Money
    affordable_labels: int | None
    risks: list[str]

    @property
    def at_risk(self) -> bool:
        return bool(self.risks)

    def to_json(self) -> dict[str, Any]:
        """The API's shape."""
        return {
            "project_id": self.project.id,
            "status": self.project.status,
            "as_of": self.now.isoformat(),
            "deadline": self.project.deadline_at.isoformat(),
            "items": {"total": self.items_total, "complete": self.items_complete},
            "labels": {
                "needed": self.labels_needed,
                "accepted": self.labels_accepted,
                "in_progress": self.labels_in_progress,
                "awaiting_review": self.labels_awaiting_review,
                "to_submit": self.labels_to_submit,
            },
            "throughput": {
                "source": self.throughput_source,
                "labels_per_hour": self.pace_per_hour,
                "windows": [w.to_json() for w in self.throughput],
            },
            "eta": {
                "at_current_pace": _iso(self.eta_at_pace),
                "at_full_capacity": _iso(self.eta_at_capacity),
                "eligible_annotators": self.workforce.annotators,
                "capacity_labels_per_hour": round(self.workforce.labels_per_hour, 2),
            },
            "budget": {
                **self.budget,
                "cost_of_remaining": self.cost_of_remaining.to_json(),
                "affordable_labels": self.affordable_labels,
            },
            "at_risk": self.at_risk,
            "risks": [{"code": code, "message": RISK_MESSAGES[code]} for code in self.risks],
        }


def project_progress(
    session: Session,
    *,
    project: Project,
    now: datetime,
    fee_bps: int,
    seen_window: timedelta,
    client: redis_lib.Redis | None,
) -> Progress:
    """Items and labels done, throughput, ETAs at the current pace and at full capacity, budget and risks."""
    is_open = Task.status == TaskStatus.OPEN.value
    total, complete, needed, accepted, in_progress, remaining = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Task.status == TaskStatus.COMPLETE.value, 1), else_=0)), 0),
            func.coalesce(func.sum(Task.labels_needed), 0),
            func.coalesce(func.sum(Task.labels_accepted), 0),
            func.coalesce(func.sum(Task.labels_in_progress), 0),
            func.coalesce(func.sum(case((is_open, Task.labels_needed - Task.labels_accepted), else_=0)), 0),
        ).where(Task.project_id == project.id, Task.is_gold.is_(False))
    ).one()
    awaiting = int(
        session.scalar(
            select(func.count())
            .select_from(Label)
            .join(Task, Task.id == Label.task_id)
            .where(
                Label.project_id == project.id,
                Label.review_state == ReviewState.PENDING.value,
                Label.is_gold.is_(False),
                is_open,
            )
        )
        or 0
    )
    to_submit = max(int(remaining) - awaiting, 0)
    counts, source = window_counts(session, scope="project", scope_id=project.id, now=now, client=client)
    by_name = {c.window.name: c for c in counts}
    # The last hour is the pace; with nothing in it, the last day's average is a better guess than zero.
    pace_window = by_name["1h"] if by_name["1h"].submitted else by_name["24h"]
    pace = round(pace_window.submitted / pace_window.window.hours, 2)
    workforce = eligible_workforce(session, project=project, now=now, seen_window=seen_window)
    eta_pace = _eta(now, to_submit, pace)
    eta_capacity = _eta(now, to_submit, workforce.labels_per_hour)
    summary = project_budget(session, project=project)
    cost = label_cost(project, fee_bps=fee_bps)
    affordable = summary.available.amount // cost.amount if cost.is_positive else None
    risks: list[str] = []
    if project.status != ProjectStatus.COMPLETED and to_submit > 0:
        if project.deadline_at <= now:
            risks.append("deadline_passed")
        if workforce.annotators == 0:
            risks.append("no_workforce")
        elif eta_capacity is not None and eta_capacity > project.deadline_at and project.deadline_at > now:
            risks.append("deadline_unreachable")
        if pace > 0 and eta_pace is not None and eta_pace > project.deadline_at and project.deadline_at > now:
            risks.append("behind_pace")
        if affordable is not None and affordable < to_submit:
            risks.append("budget_short")
    return Progress(
        project=project,
        now=now,
        items_total=int(total),
        items_complete=int(complete),
        labels_needed=int(needed),
        labels_accepted=int(accepted),
        labels_in_progress=int(in_progress),
        labels_awaiting_review=awaiting,
        labels_to_submit=to_submit,
        throughput=counts,
        throughput_source=source,
        pace_per_hour=pace,
        workforce=workforce,
        eta_at_pace=eta_pace,
        eta_at_capacity=eta_capacity,
        budget=summary.to_json(),
        cost_of_remaining=cost * to_submit,
        affordable_labels=affordable,
        risks=risks,
    )


# --- annotator stats ------------------------------------------------------------------------------------------


def annotator_stats(
    session: Session, *, annotator: AnnotatorProfile, now: datetime, client: redis_lib.Redis | None
) -> dict[str, Any]:
    """Speed, recent throughput, acceptance rate, accuracy per skill and effective hourly pay of an annotator."""
    tally = label_counts(session, annotator_id=annotator.id)
    since = now - timedelta(days=EARNINGS_DAYS)
    rows = session.execute(
        select(Assignment.leased_at, Label.created_at, Label.review_state, Assignment.price_minor)
        .join(Assignment, Assignment.id == Label.assignment_id)
        .where(Label.annotator_id == annotator.id, Label.created_at >= since)
    ).tuples()
    intervals: list[tuple[datetime, datetime]] = []
    earned = 0
    for leased, submitted, state, price in rows:
        intervals.append((leased, max(submitted, leased)))
        if state == ReviewState.ACCEPTED:
            earned += int(price)
    hours = active_seconds(intervals) / 3600.0
    hourly = Money(round(earned / hours), annotator.currency) if hours > 0 else None
    counts, source = window_counts(session, scope="annotator", scope_id=annotator.id, now=now, client=client)
    return {
        "annotator_id": annotator.id,
        "labels_per_hour": {
            "declared": annotator.labels_per_hour,
            "measured": annotator.measured_labels_per_hour,
        },
        "throughput": {"source": source, "windows": [c.to_json() for c in counts]},
        "labels": {
            "submitted": tally.submitted,
            "accepted": tally.accepted,
            "rejected": tally.rejected,
            "pending": tally.pending,
        },
        "acceptance_rate": round(tally.acceptance_rate, 4) if tally.acceptance_rate is not None else None,
        "accuracy": [
            {
                "skill": s.skill.name,
                "accuracy": round(s.accuracy, 4),
                "alpha": s.accuracy_alpha,
                "beta": s.accuracy_beta,
                "gold_seen": s.gold_seen,
                "gold_correct": s.gold_correct,
            }
            for s in annotator.skills
        ],
        "earnings": {
            "days": EARNINGS_DAYS,
            "earned": Money(earned, annotator.currency).to_json(),
            "active_hours": round(hours, 3),
            "effective_hourly_pay": hourly.to_json() if hourly is not None else None,
        },
    }
