"""The planner: read open slots and available annotators, ask `routing` for the optimal assignment, store offers.

Reads use plain column selects (never ORM objects per task), so a plan over 100k open items costs what the
engine costs. Each currency is its own problem: an annotator is paid in the project's currency only.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

import routing
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus, Skill
from marketplace.billing.services import affordable_slots
from marketplace.planning.models import Offer, PlanRun
from marketplace.projects.models import Project, ProjectStatus, Task, TaskStatus
from marketplace.work.models import Assignment, AssignmentState, ProjectWorker

log = logging.getLogger(__name__)

#: task priorities run from -100 to 100; the engine maximises a non-negative priority sum, so shift them
PRIORITY_SHIFT = 101


@dataclass
class PlanInput:
    """What the planner read: per currency, a routing instance, and the facts to turn its answer into offers."""

    instances: dict[str, routing.Instance] = field(default_factory=dict)
    task_project: dict[int, int] = field(default_factory=dict)
    task_rank_key: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    annotator_price: dict[int, int] = field(default_factory=dict)
    annotator_ids: list[int] = field(default_factory=list)
    done_pairs: set[tuple[int, int]] = field(default_factory=set)
    #: (project, annotator) pairs kept apart, e.g. after failed gold items
    blocked: set[tuple[int, int]] = field(default_factory=set)
    slots_open: int = 0


def _hours_until(deadline: datetime, now: datetime) -> float:
    return max((deadline - now).total_seconds() / 3600.0, 0.0)


def read_plan_input(
    session: Session, *, now: datetime, fee_bps: int, seen_window: timedelta, project_id: int | None = None
) -> PlanInput:
    """Open slots, available annotators and budgets, as routing instances per currency."""
    plan = PlanInput()
    project_stmt = select(Project).where(
        Project.status == ProjectStatus.ACTIVE.value, Project.deadline_at > now
    )
    if project_id is not None:
        project_stmt = project_stmt.where(Project.id == project_id)
    projects = {p.id: p for p in session.scalars(project_stmt)}
    if not projects:
        return plan
    skill_names = dict(session.execute(select(Skill.id, Skill.name)).tuples().all())
    budgets = {
        pid: routing.ProjectBudget(max_slots=affordable_slots(session, project=p, fee_bps=fee_bps))
        for pid, p in projects.items()
    }
    free = Task.free_slots
    task_rows = session.execute(
        select(Task.id, Task.project_id, Task.priority, free)
        .where(
            Task.project_id.in_(projects),
            Task.status == TaskStatus.OPEN.value,
            Task.is_gold.is_(False),
            free > 0,
        )
        .order_by(Task.id)
    ).tuples()
    # Pairs that may not be offered: the annotator already had the item (any state), or is blocked from its
    # project. The engine excludes them, so their slots go to someone else rather than being dropped.
    plan.done_pairs = set(
        session.execute(
            select(Assignment.task_id, Assignment.annotator_id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id.in_(projects), Task.status == TaskStatus.OPEN.value)
        )
        .tuples()
        .all()
    )
    plan.blocked = set(
        session.execute(
            select(ProjectWorker.project_id, ProjectWorker.annotator_id).where(
                ProjectWorker.blocked_at.is_not(None), ProjectWorker.project_id.in_(projects)
            )
        )
        .tuples()
        .all()
    )
    excluded: dict[int, set[str]] = defaultdict(set)
    for task_id, annotator_id in plan.done_pairs:
        excluded[task_id].add(str(annotator_id))
    blocked_from: dict[int, frozenset[str]] = {}
    for pid, annotator_id in plan.blocked:
        blocked_from[pid] = blocked_from.get(pid, frozenset()) | {str(annotator_id)}
    tasks_by_currency: dict[str, list[routing.Task]] = defaultdict(list)
    for task_id, pid, priority, slots in task_rows:
        project = projects[pid]
        deadline_hours = _hours_until(project.deadline_at, now)
        tasks_by_currency[project.currency].append(
            routing.Task(
                id=str(task_id),
                skill=skill_names[project.skill_id],
                min_level=project.min_level,
                labels_needed=int(slots),
                deadline_hours=deadline_hours,
                max_price=project.pay_per_label_minor,
                priority=int(priority) + PRIORITY_SHIFT,
                project=str(pid),
                excluded=blocked_from.get(pid, frozenset()) | excluded.get(task_id, set()),
            )
        )
        plan.task_project[task_id] = pid
        plan.task_rank_key[task_id] = (deadline_hours, -int(priority), task_id)
        plan.slots_open += int(slots)
    annotators_by_currency = _read_annotators(
        session, now=now, seen_window=seen_window, skill_names=skill_names, plan=plan
    )
    for currency, tasks in tasks_by_currency.items():
        annotators = annotators_by_currency.get(currency, [])
        if not annotators:
            continue
        used_projects = {t.project for t in tasks if t.project is not None}
        plan.instances[currency] = routing.Instance(
            tasks=tuple(tasks),
            annotators=tuple(annotators),
            project_budgets={str(pid): budgets[pid] for pid in map(int, used_projects)},
        )
    return plan


def _read_annotators(
    session: Session, *, now: datetime, seen_window: timedelta, skill_names: dict[int, str], plan: PlanInput
) -> dict[str, list[routing.Annotator]]:
    live = (
        select(Assignment.annotator_id, func.count().label("n"))
        .where(Assignment.state == AssignmentState.LEASED.value)
        .group_by(Assignment.annotator_id)
        .subquery()
    )
    rows = session.execute(
        select(
            AnnotatorProfile.id,
            AnnotatorProfile.price_minor,
            AnnotatorProfile.currency,
            AnnotatorProfile.capacity,
            func.coalesce(AnnotatorProfile.measured_labels_per_hour, AnnotatorProfile.labels_per_hour),
            func.coalesce(live.c.n, 0),
        )
        .outerjoin(live, live.c.annotator_id == AnnotatorProfile.id)
        .where(
            AnnotatorProfile.status == AnnotatorStatus.ACTIVE.value,
            AnnotatorProfile.last_seen_at >= now - seen_window,
        )
    ).tuples()
    profiles = {r[0]: r for r in rows if r[3] - r[5] > 0}
    skills: dict[int, dict[str, int]] = defaultdict(dict)
    quality: dict[int, list[float]] = defaultdict(list)
    if profiles:
        for annotator_id, skill_id, level, alpha, beta in session.execute(
            select(
                AnnotatorSkill.annotator_id,
                AnnotatorSkill.skill_id,
                AnnotatorSkill.level,
                AnnotatorSkill.accuracy_alpha,
                AnnotatorSkill.accuracy_beta,
            ).where(AnnotatorSkill.annotator_id.in_(profiles))
        ).tuples():
            skills[annotator_id][skill_names[skill_id]] = level
            quality[annotator_id].append(alpha / (alpha + beta))
    out: dict[str, list[routing.Annotator]] = defaultdict(list)
    for annotator_id, price, currency, capacity, speed, leased in profiles.values():
        if not skills[annotator_id]:
            continue
        out[currency].append(
            routing.Annotator(
                id=str(annotator_id),
                skills=skills[annotator_id],
                price=int(price),
                capacity=int(capacity - leased),
                labels_per_hour=float(speed),
                quality=sum(quality[annotator_id]) / len(quality[annotator_id]),
            )
        )
        plan.annotator_price[annotator_id] = int(price)
        plan.annotator_ids.append(annotator_id)
    return out


def plan_offers(
    session: Session,
    *,
    now: datetime,
    fee_bps: int,
    method: str = "flow",
    objective: str = "production",
    project_id: int | None = None,
    seen_window: timedelta = timedelta(hours=1),
    time_limit_s: float | None = None,
    warm_potentials: dict[str, dict[str, int]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[PlanRun, dict[str, dict[str, int]]]:
    """Solve the routing problem and replace the offers of every annotator it planned for, atomically.

    `objective="production"` keeps the exact lexicographic objective (priority placed, then price) and breaks its
    ties by annotator accuracy; "exact" leaves ties to the solver.

    Returns the recorded run and each currency's annotator potentials (to warm-start the next plan).
    """
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    say("reading open slots and annotators")
    plan = read_plan_input(session, now=now, fee_bps=fee_bps, seen_window=seen_window, project_id=project_id)
    offers: list[dict[str, Any]] = []
    statuses: list[str] = []
    stats: dict[str, Any] = {}
    cost: dict[str, int] = {}
    potentials: dict[str, dict[str, int]] = {}
    dropped = 0
    for currency, instance in sorted(plan.instances.items()):
        say(f"solving {currency}: {len(instance.tasks):,} items × {len(instance.annotators):,} annotators")
        result = routing.solve(
            instance,
            method=method,
            time_limit_s=time_limit_s,
            warm_potentials=(warm_potentials or {}).get(currency),
            objective=objective,
        )
        statuses.append(result.status)
        stats[currency] = {k: v for k, v in result.stats.items() if isinstance(v, (int, float, str, bool))}
        potentials[currency] = dict(result.potentials)
        for pair in result.assignments:
            task_id, annotator_id = int(pair.task), int(pair.annotator)
            if (task_id, annotator_id) in plan.done_pairs or (
                (plan.task_project[task_id], annotator_id) in plan.blocked
            ):
                dropped += 1
                continue
            offers.append(
                {
                    "annotator_id": annotator_id,
                    "task_id": task_id,
                    "project_id": plan.task_project[task_id],
                    "price_minor": plan.annotator_price[annotator_id],
                    "currency": currency,
                }
            )
            cost[currency] = cost.get(currency, 0) + plan.annotator_price[annotator_id]
    status = _overall_status(statuses)
    run = PlanRun(
        started_at=now,
        method=method,
        status=status,
        scope=f"project:{project_id}" if project_id is not None else "all",
        tasks=len(plan.task_project),
        annotators=len(plan.annotator_ids),
        slots_open=plan.slots_open,
        slots_filled=len(offers),
        cost=cost,
        stats={**stats, "dropped_repeat_pairs": dropped},
    )
    session.add(run)
    session.flush()  # generate run.id for the offers
    say(f"storing {len(offers):,} offers")
    _replace_offers(session, run=run, plan=plan, offers=offers, project_id=project_id)
    run.finished_at = now + timedelta(seconds=time.perf_counter() - started)
    run.duration_ms = int((time.perf_counter() - started) * 1000)
    return run, potentials


def _overall_status(statuses: list[str]) -> str:
    if not statuses:
        return "empty"
    for worst in ("overflow", "infeasible", "timeout", "feasible"):
        if worst in statuses:
            return worst
    return "optimal"


def _replace_offers(
    session: Session, *, run: PlanRun, plan: PlanInput, offers: list[dict[str, Any]], project_id: int | None
) -> None:
    # The annotators this plan looked at get exactly the new offers (within the plan's scope); annotators it did
    # not see keep theirs until a later plan or their use.
    planned = plan.annotator_ids
    for start in range(0, len(planned), 500):
        chunk = planned[start : start + 500]
        stmt = delete(Offer).where(Offer.annotator_id.in_(chunk))
        if project_id is not None:
            stmt = stmt.where(Offer.project_id == project_id)
        session.execute(stmt)
    by_annotator: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for offer in offers:
        by_annotator[offer["annotator_id"]].append(offer)
    rows: list[dict[str, Any]] = []
    for annotator_offers in by_annotator.values():
        # Earliest deadline first: the order the engine's deadline constraint assumes the work is done in.
        annotator_offers.sort(key=lambda o: plan.task_rank_key[o["task_id"]])
        for rank, offer in enumerate(annotator_offers, start=1):
            rows.append({**offer, "rank": rank, "plan_run_id": run.id, "created_at": run.started_at})
    for start in range(0, len(rows), 5000):
        session.execute(insert(Offer), rows[start : start + 5000])


def plan_summary(run: PlanRun) -> dict[str, Any]:
    """A plan run as the API and the CLI show it."""
    return {
        "id": run.id,
        "started_at": run.started_at.isoformat(),
        "duration_ms": run.duration_ms,
        "method": run.method,
        "status": run.status,
        "scope": run.scope,
        "tasks": run.tasks,
        "annotators": run.annotators,
        "slots_open": run.slots_open,
        "slots_filled": run.slots_filled,
        "cost": run.cost,
        "stats": run.stats,
    }
