"""Test data for the routing engine: hypothesis strategies, an exhaustive reference solver, helpers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from routing import Annotator, Instance, ProjectBudget, Result, Task

# Wall-clock deadlines would make these tests flaky on a shared 2-core machine; sizes keep them fast.
PROPERTY = settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
PROPERTY_SMALL = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

SKILLS = ("ocr", "audio")
# Short deadlines against slow annotators make the EDF limits bind (even below one label).
DEADLINES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 6.0)
SPEEDS = (0.5, 1.0, 2.0, 3.0)


def task(
    id: str,
    *,
    skill: str = "ocr",
    min_level: int = 1,
    labels_needed: int = 1,
    deadline_hours: float = 24.0,
    max_price: int = 1000,
    priority: int = 1,
    project: str | None = None,
) -> Task:
    """A task with sensible defaults."""
    return Task(id, skill, min_level, labels_needed, deadline_hours, max_price, priority, project)


def annotator(
    id: str,
    *,
    skills: Mapping[str, int] | None = None,
    price: int = 100,
    capacity: int = 10,
    labels_per_hour: float = 10.0,
    quality: float | None = None,
) -> Annotator:
    """An annotator with sensible defaults (level 3 in ocr)."""
    return Annotator(id, dict(skills or {"ocr": 3}), price, capacity, labels_per_hour, quality)


@st.composite
def instances(
    draw: st.DrawFn,
    *,
    max_tasks: int = 4,
    max_annotators: int = 3,
    budgets: bool = True,
    money: bool = False,
    quality: bool = False,
) -> Instance:
    """Small random instances with binding capacities, deadlines, price caps, priorities and projects."""
    n_tasks = draw(st.integers(0, max_tasks))
    n_annotators = draw(st.integers(0, max_annotators))
    tasks = tuple(
        Task(
            id=f"t{i}",
            skill=draw(st.sampled_from(SKILLS)),
            min_level=draw(st.integers(0, 3)),
            labels_needed=draw(st.integers(0, 3)),
            deadline_hours=draw(st.sampled_from(DEADLINES)),
            max_price=draw(st.integers(0, 12)),
            priority=draw(st.sampled_from((0, 1, 1, 1, 2, 3))),
            project=draw(st.sampled_from((None, "p", "q"))),
        )
        for i in range(n_tasks)
    )
    annotators = tuple(
        Annotator(
            id=f"a{i}",
            skills=draw(st.dictionaries(st.sampled_from(SKILLS), st.integers(0, 3), max_size=2)),
            price=draw(st.integers(0, 10)),
            capacity=draw(st.integers(0, 4)),
            labels_per_hour=draw(st.sampled_from(SPEEDS)),
            quality=draw(st.sampled_from((None, 0.5, 0.7, 0.9))) if quality else None,
        )
        for i in range(n_annotators)
    )
    limits: dict[str, ProjectBudget] = {}
    if budgets:
        for project in ("p", "q"):
            if draw(st.booleans()):
                slots = draw(st.one_of(st.none(), st.integers(0, 4)))
                spend = draw(st.one_of(st.none(), st.integers(0, 25))) if money else None
                if slots is not None or spend is not None:
                    limits[project] = ProjectBudget(max_slots=slots, budget=spend)
    return Instance(tasks=tasks, annotators=annotators, project_budgets=limits)


def eligible(instance: Instance) -> list[tuple[Task, Annotator]]:
    """Every eligible (task, annotator) pair, by the definition (not the engine's code)."""
    return [
        (t, a)
        for t in instance.tasks
        for a in instance.annotators
        if a.skills.get(t.skill, -1) >= t.min_level
        and a.price <= t.max_price
        and math.floor(a.labels_per_hour * t.deadline_hours) >= 1
        and a.capacity >= 1
        and t.labels_needed >= 1
    ]


def _feasible(instance: Instance, chosen: tuple[tuple[Task, Annotator], ...]) -> bool:
    per_task: dict[str, int] = {}
    per_annotator: dict[str, list[Task]] = {}
    slots: dict[str, int] = {}
    spend: dict[str, int] = {}
    for t, a in chosen:
        per_task[t.id] = per_task.get(t.id, 0) + 1
        per_annotator.setdefault(a.id, []).append(t)
        if t.project is not None:
            slots[t.project] = slots.get(t.project, 0) + 1
            spend[t.project] = spend.get(t.project, 0) + a.price
    if any(per_task[t.id] > t.labels_needed for t, _ in chosen):
        return False
    annotators = {a.id: a for a in instance.annotators}
    for annotator_id, taken in per_annotator.items():
        a = annotators[annotator_id]
        if len(taken) > a.capacity:
            return False
        for t in taken:
            due = sum(1 for other in taken if other.deadline_hours <= t.deadline_hours)
            if due > math.floor(a.labels_per_hour * t.deadline_hours):
                return False
    for project, budget in instance.project_budgets.items():
        if budget.max_slots is not None and slots.get(project, 0) > budget.max_slots:
            return False
        if budget.budget is not None and spend.get(project, 0) > budget.budget:
            return False
    return True


def exhaustive_optimum(instance: Instance) -> tuple[int, int]:
    """(priority, -cost) of the lexicographic optimum, by trying every subset of eligible pairs."""
    pairs = eligible(instance)
    assert len(pairs) <= 14, "too many pairs for an exhaustive search"
    best = (0, 0)
    for size in range(1, len(pairs) + 1):
        for chosen in combinations(pairs, size):
            value = (sum(t.priority for t, _ in chosen), -sum(a.price for _, a in chosen))
            if value > best and _feasible(instance, chosen):
                best = value
    return best


def objective(result: Result) -> tuple[int, int]:
    """The lexicographic objective of a result: (priority, -cost), larger is better."""
    return (result.priority_total, -result.cost_total)


def quality_penalty(instance: Instance, result: Result) -> int:
    """The production tie-breaker's penalty: 1000 x (1 - quality) per label, unknown quality counting as 0."""
    quality = {a.id: a.quality if a.quality is not None else 0.0 for a in instance.annotators}
    return sum(round(1000 * (1.0 - quality[a])) for _, a in result.assignments)
