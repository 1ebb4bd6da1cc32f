"""The answer of a solve: assignments, totals, unfilled slots and statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from routing.instance import Instance

StatValue = int | float | bool | str | None | list[Any] | dict[str, Any]

STATUSES = ("optimal", "feasible", "infeasible", "overflow", "timeout")


class Assignment(NamedTuple):
    """One label slot given to one annotator."""

    task: str
    annotator: str


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Result:
    """A solve's outcome; `status` is one of STATUSES, `stats` holds timings and solver facts."""

    status: str
    method: str
    assignments: tuple[Assignment, ...]
    assigned: int
    priority_total: int
    cost_total: int
    unfilled: Mapping[str, int]
    stats: Mapping[str, StatValue] = field(default_factory=_empty_mapping)
    message: str = ""
    # Each annotator's shadow price (minor units per label) from the solve's dual; feed it back as
    # `warm_potentials` to the next plan so that its first guided round needs no sampling.
    potentials: Mapping[str, int] = field(default_factory=_empty_mapping)

    def to_json(self) -> dict[str, Any]:
        """Encode as the result document of the CLI."""
        document: dict[str, Any] = {
            "status": self.status,
            "method": self.method,
            "assignments": [{"task": a.task, "annotator": a.annotator} for a in self.assignments],
            "assigned": self.assigned,
            "priority_total": self.priority_total,
            "cost_total": self.cost_total,
            "unfilled": dict(self.unfilled),
            "stats": dict(self.stats),
        }
        if self.message:
            document["message"] = self.message
        if self.potentials:
            document["potentials"] = dict(self.potentials)
        return document


def build_result(
    instance: Instance,
    *,
    status: str,
    method: str,
    assignments: Iterable[Assignment],
    stats: Mapping[str, StatValue],
    message: str = "",
    potentials: Mapping[str, int] | None = None,
) -> Result:
    """Compute the totals and the unfilled slots of an assignment list and wrap it in a Result."""
    ordered = tuple(sorted(assignments))
    tasks = {task.id: task for task in instance.tasks}
    prices = {annotator.id: annotator.price for annotator in instance.annotators}
    placed: dict[str, int] = {}
    priority_total = 0
    cost_total = 0
    for assignment in ordered:
        placed[assignment.task] = placed.get(assignment.task, 0) + 1
        priority_total += tasks[assignment.task].priority
        cost_total += prices[assignment.annotator]
    unfilled = {
        task.id: task.labels_needed - placed.get(task.id, 0)
        for task in instance.tasks
        if task.labels_needed > placed.get(task.id, 0)
    }
    return Result(
        status=status,
        method=method,
        assignments=ordered,
        assigned=len(ordered),
        priority_total=priority_total,
        cost_total=cost_total,
        unfilled=MappingProxyType(unfilled),
        stats=MappingProxyType(dict(stats)),
        message=message,
        potentials=MappingProxyType(dict(potentials or {})),
    )


def empty_result(
    instance: Instance, *, status: str, method: str, stats: Mapping[str, StatValue], message: str = ""
) -> Result:
    """A result that assigns nothing (no eligible pairs, or an instance the engine cannot represent)."""
    return build_result(instance, status=status, method=method, assignments=(), stats=stats, message=message)
