"""Routing instances: plain frozen dataclasses, JSON parsing and validation with field paths."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class InstanceError(ValueError):
    """A malformed instance or an unsupported request; the message names the field path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Task:
    """An item that still needs `labels_needed` labels from distinct annotators."""

    id: str
    skill: str
    min_level: int
    labels_needed: int
    deadline_hours: float
    max_price: int
    priority: int = 1
    project: str | None = None
    #: annotators who may not take this task (they already labelled, skipped or lost the item)
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Annotator:
    """Someone who labels: a level per skill, a price per label, a capacity and a speed."""

    id: str
    skills: Mapping[str, int]
    price: int
    capacity: int
    labels_per_hour: float
    quality: float | None = None


@dataclass(frozen=True, slots=True)
class ProjectBudget:
    """What a project can still afford: a number of slots, money in minor units, or both."""

    max_slots: int | None = None
    budget: int | None = None


def _frozen_budgets(budgets: Mapping[str, ProjectBudget]) -> Mapping[str, ProjectBudget]:
    return MappingProxyType(dict(budgets))


@dataclass(frozen=True, slots=True)
class Instance:
    """One routing problem: open tasks, available annotators and optional project budgets."""

    tasks: tuple[Task, ...]
    annotators: tuple[Annotator, ...]
    project_budgets: Mapping[str, ProjectBudget] = field(default_factory=lambda: MappingProxyType({}))


_TASK_FIELDS = {
    "id",
    "skill",
    "min_level",
    "labels_needed",
    "deadline_hours",
    "max_price",
    "priority",
    "project",
    "excluded",
}
_TASK_REQUIRED = ("id", "skill", "min_level", "labels_needed", "deadline_hours", "max_price")
_ANNOTATOR_FIELDS = {"id", "skills", "price", "capacity", "labels_per_hour", "quality"}
_ANNOTATOR_REQUIRED = ("id", "skills", "price", "capacity", "labels_per_hour")
_BUDGET_FIELDS = {"max_slots", "budget"}


def _json_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _require_int(path: str, value: object, *, minimum: int | None = 0) -> int:
    # bool is a subclass of int in Python; in an instance it is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstanceError(path, f"expected an integer, got {_json_name(value)}")
    if minimum is not None and value < minimum:
        raise InstanceError(path, f"must be >= {minimum}, got {value}")
    return value


def _require_number(path: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InstanceError(path, f"expected a number, got {_json_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InstanceError(path, f"expected a finite number, got {value!r}")
    if number < minimum:
        raise InstanceError(path, f"must be >= {minimum:g}, got {value!r}")
    return number


def _require_str(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise InstanceError(path, f"expected a string, got {_json_name(value)}")
    if not value:
        raise InstanceError(path, "must not be empty")
    return value


def _require_object(path: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InstanceError(path, f"expected an object, got {_json_name(value)}")
    return value


def _require_list(path: str, value: object) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise InstanceError(path, f"expected a list, got {_json_name(value)}")
    return list(value)


def _check_fields(path: str, raw: Mapping[str, Any], allowed: set[str], required: tuple[str, ...]) -> None:
    for name in required:
        if name not in raw:
            raise InstanceError(f"{path}.{name}", "missing")
    # Unknown keys are rejected so that a typo in an optional field ("prority") is not silently defaulted.
    for name in raw:
        if name not in allowed:
            raise InstanceError(f"{path}.{name}", "unknown field")


def validate_task(path: str, task: Task) -> None:
    """Check one task's types and ranges; raise InstanceError naming the field."""
    _require_str(f"{path}.id", task.id)
    _require_str(f"{path}.skill", task.skill)
    _require_int(f"{path}.min_level", task.min_level)
    _require_int(f"{path}.labels_needed", task.labels_needed)
    _require_number(f"{path}.deadline_hours", task.deadline_hours)
    _require_int(f"{path}.max_price", task.max_price)
    _require_int(f"{path}.priority", task.priority)
    if task.project is not None:
        _require_str(f"{path}.project", task.project)
    if not isinstance(task.excluded, frozenset):
        raise InstanceError(
            f"{path}.excluded", f"expected a set of annotator ids, got {_json_name(task.excluded)}"
        )
    for annotator_id in task.excluded:
        _require_str(f"{path}.excluded", annotator_id)


def validate_annotator(path: str, annotator: Annotator) -> None:
    """Check one annotator's types and ranges; raise InstanceError naming the field."""
    _require_str(f"{path}.id", annotator.id)
    skills = _require_object(f"{path}.skills", annotator.skills)
    for skill, level in skills.items():
        _require_str(f"{path}.skills", skill)
        _require_int(f"{path}.skills.{skill}", level)
    _require_int(f"{path}.price", annotator.price)
    _require_int(f"{path}.capacity", annotator.capacity)
    _require_number(f"{path}.labels_per_hour", annotator.labels_per_hour)
    if annotator.quality is not None:
        quality = _require_number(f"{path}.quality", annotator.quality)
        if quality > 1.0:
            raise InstanceError(f"{path}.quality", f"must be between 0 and 1, got {annotator.quality!r}")


def validate_budgets(path: str, budgets: Mapping[str, ProjectBudget]) -> None:
    """Check project budgets; raise InstanceError naming the field."""
    _require_object(path, budgets)
    for project, budget in budgets.items():
        _require_str(path, project)
        if not isinstance(budget, ProjectBudget):
            raise InstanceError(f"{path}.{project}", f"expected a ProjectBudget, got {_json_name(budget)}")
        if budget.max_slots is None and budget.budget is None:
            raise InstanceError(f"{path}.{project}", "needs max_slots or budget")
        if budget.max_slots is not None:
            _require_int(f"{path}.{project}.max_slots", budget.max_slots)
        if budget.budget is not None:
            _require_int(f"{path}.{project}.budget", budget.budget)


def validate_instance(instance: Instance) -> None:
    """Check every field of an instance and the uniqueness of ids; raise InstanceError naming the field."""
    if not isinstance(instance.tasks, tuple | list):
        raise InstanceError("tasks", f"expected a sequence, got {_json_name(instance.tasks)}")
    if not isinstance(instance.annotators, tuple | list):
        raise InstanceError("annotators", f"expected a sequence, got {_json_name(instance.annotators)}")
    first_task: dict[str, int] = {}
    for index, task in enumerate(instance.tasks):
        path = f"tasks[{index}]"
        if not isinstance(task, Task):
            raise InstanceError(path, f"expected a Task, got {_json_name(task)}")
        validate_task(path, task)
        if task.id in first_task:
            raise InstanceError(
                f"{path}.id", f"duplicate id {task.id!r} (first at tasks[{first_task[task.id]}])"
            )
        first_task[task.id] = index
    first_annotator: dict[str, int] = {}
    for index, annotator in enumerate(instance.annotators):
        path = f"annotators[{index}]"
        if not isinstance(annotator, Annotator):
            raise InstanceError(path, f"expected an Annotator, got {_json_name(annotator)}")
        validate_annotator(path, annotator)
        if annotator.id in first_annotator:
            first = first_annotator[annotator.id]
            raise InstanceError(f"{path}.id", f"duplicate id {annotator.id!r} (first at annotators[{first}])")
        first_annotator[annotator.id] = index
    validate_budgets("project_budgets", instance.project_budgets)


def _task_from_json(path: str, raw: object) -> Task:
    data = _require_object(path, raw)
    _check_fields(path, data, _TASK_FIELDS, _TASK_REQUIRED)
    task = Task(
        id=data["id"],
        skill=data["skill"],
        min_level=data["min_level"],
        labels_needed=data["labels_needed"],
        deadline_hours=data["deadline_hours"],
        max_price=data["max_price"],
        priority=data.get("priority", 1),
        project=data.get("project"),
        excluded=frozenset(_excluded_from_json(f"{path}.excluded", data.get("excluded", []))),
    )
    validate_task(path, task)
    # Deadlines may be written as integers in JSON; the engine works with floats.
    return Task(
        id=task.id,
        skill=task.skill,
        min_level=task.min_level,
        labels_needed=task.labels_needed,
        deadline_hours=float(task.deadline_hours),
        max_price=task.max_price,
        priority=task.priority,
        project=task.project,
        excluded=task.excluded,
    )


def _excluded_from_json(path: str, raw: object) -> list[str]:
    return [_require_str(f"{path}[{index}]", value) for index, value in enumerate(_require_list(path, raw))]


def _annotator_from_json(path: str, raw: object) -> Annotator:
    data = _require_object(path, raw)
    _check_fields(path, data, _ANNOTATOR_FIELDS, _ANNOTATOR_REQUIRED)
    skills = _require_object(f"{path}.skills", data["skills"])
    quality = data.get("quality")
    annotator = Annotator(
        id=data["id"],
        skills=MappingProxyType(dict(skills)),
        price=data["price"],
        capacity=data["capacity"],
        labels_per_hour=data["labels_per_hour"],
        quality=quality,
    )
    validate_annotator(path, annotator)
    return Annotator(
        id=annotator.id,
        skills=annotator.skills,
        price=annotator.price,
        capacity=annotator.capacity,
        labels_per_hour=float(annotator.labels_per_hour),
        quality=None if quality is None else float(quality),
    )


def budgets_from_json(path: str, raw: object) -> dict[str, ProjectBudget]:
    """Parse `{project: {"max_slots": int, "budget": int}}`; raise InstanceError naming the field."""
    data = _require_object(path, raw)
    budgets: dict[str, ProjectBudget] = {}
    for project, entry in data.items():
        _require_str(path, project)
        entry_path = f"{path}.{project}"
        fields = _require_object(entry_path, entry)
        _check_fields(entry_path, fields, _BUDGET_FIELDS, ())
        budget = ProjectBudget(max_slots=fields.get("max_slots"), budget=fields.get("budget"))
        validate_budgets(path, {project: budget})
        budgets[project] = budget
    return budgets


def instance_from_json(data: object) -> Instance:
    """Build an Instance from decoded JSON; raise InstanceError naming the first bad field."""
    top = _require_object("", data)
    _check_fields("instance", top, {"tasks", "annotators", "project_budgets"}, ())
    for name in ("tasks", "annotators"):
        if name not in top:
            raise InstanceError(name, "missing")
    tasks = tuple(
        _task_from_json(f"tasks[{index}]", raw)
        for index, raw in enumerate(_require_list("tasks", top["tasks"]))
    )
    annotators = tuple(
        _annotator_from_json(f"annotators[{index}]", raw)
        for index, raw in enumerate(_require_list("annotators", top["annotators"]))
    )
    budgets = budgets_from_json("project_budgets", top.get("project_budgets") or {})
    instance = Instance(tasks=tasks, annotators=annotators, project_budgets=_frozen_budgets(budgets))
    validate_instance(instance)
    return instance


def budget_to_json(budget: ProjectBudget) -> dict[str, int]:
    """Encode one project budget as JSON, leaving out the limits it does not set."""
    encoded: dict[str, int] = {}
    if budget.max_slots is not None:
        encoded["max_slots"] = budget.max_slots
    if budget.budget is not None:
        encoded["budget"] = budget.budget
    return encoded


def instance_to_json(instance: Instance) -> dict[str, Any]:
    """Encode an Instance as the JSON document the CLI reads."""
    tasks: list[dict[str, Any]] = []
    for task in instance.tasks:
        encoded: dict[str, Any] = {
            "id": task.id,
            "skill": task.skill,
            "min_level": task.min_level,
            "labels_needed": task.labels_needed,
            "deadline_hours": task.deadline_hours,
            "max_price": task.max_price,
            "priority": task.priority,
        }
        if task.project is not None:
            encoded["project"] = task.project
        if task.excluded:
            encoded["excluded"] = sorted(task.excluded)
        tasks.append(encoded)
    annotators: list[dict[str, Any]] = []
    for annotator in instance.annotators:
        encoded = {
            "id": annotator.id,
            "skills": dict(annotator.skills),
            "price": annotator.price,
            "capacity": annotator.capacity,
            "labels_per_hour": annotator.labels_per_hour,
        }
        if annotator.quality is not None:
            encoded["quality"] = annotator.quality
        annotators.append(encoded)
    document: dict[str, Any] = {"tasks": tasks, "annotators": annotators}
    if instance.project_budgets:
        document["project_budgets"] = {
            project: budget_to_json(budget) for project, budget in instance.project_budgets.items()
        }
    return document
