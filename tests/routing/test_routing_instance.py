"""Instance JSON: parsing, field-path errors, round trips, the generator."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from routing import Instance, InstanceError, generate_instance, instance_from_json, instance_to_json, solve
from routing.instance import validate_instance
from tests.routing.routing_factories import annotator, task

GOOD: dict[str, Any] = {
    "tasks": [
        {
            "id": "t1",
            "skill": "ocr",
            "min_level": 2,
            "labels_needed": 2,
            "deadline_hours": 12,
            "max_price": 300,
        },
        {
            "id": "t2",
            "skill": "ocr",
            "min_level": 1,
            "labels_needed": 1,
            "deadline_hours": 1.5,
            "max_price": 250,
            "priority": 3,
            "project": "p",
        },
    ],
    "annotators": [
        {"id": "a1", "skills": {"ocr": 3}, "price": 200, "capacity": 5, "labels_per_hour": 4},
        {
            "id": "a2",
            "skills": {"ocr": 2},
            "price": 150,
            "capacity": 1,
            "labels_per_hour": 2.5,
            "quality": 0.9,
        },
    ],
    "project_budgets": {"p": {"max_slots": 1}},
}


def _with(path: list[Any], value: Any, *, delete: bool = False) -> dict[str, Any]:
    document = copy.deepcopy(GOOD)
    target = document
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


def test_parses_and_round_trips() -> None:
    instance = instance_from_json(GOOD)
    assert instance.tasks[0].deadline_hours == 12.0
    assert instance.tasks[0].priority == 1
    assert instance.tasks[1].project == "p"
    assert instance.annotators[1].quality == 0.9
    assert instance.project_budgets["p"].max_slots == 1
    assert instance_from_json(instance_to_json(instance)) == instance


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["tasks", 1, "max_price"], 1.5, "tasks[1].max_price: expected an integer, got 1.5"),
        (["tasks", 0, "labels_needed"], -1, "tasks[0].labels_needed: must be >= 0, got -1"),
        (["tasks", 0, "labels_needed"], True, "tasks[0].labels_needed: expected an integer, got true"),
        (["tasks", 0, "min_level"], "2", "tasks[0].min_level: expected an integer, got a string ('2')"),
        (["tasks", 0, "deadline_hours"], None, "tasks[0].deadline_hours: expected a number, got null"),
        (["tasks", 0, "deadline_hours"], float("nan"), "tasks[0].deadline_hours: expected a finite number"),
        (["tasks", 0, "skill"], 7, "tasks[0].skill: expected a string, got 7"),
        (["tasks", 0, "prority"], 2, "tasks[0].prority: unknown field"),
        (["tasks", 1, "priority"], -2, "tasks[1].priority: must be >= 0"),
        (["tasks", 1, "project"], 5, "tasks[1].project: expected a string"),
        (["annotators", 0, "capacity"], -3, "annotators[0].capacity: must be >= 0, got -3"),
        (["annotators", 0, "price"], 19.99, "annotators[0].price: expected an integer, got 19.99"),
        (["annotators", 1, "skills"], ["ocr"], "annotators[1].skills: expected an object, got a list"),
        (["annotators", 1, "skills", "ocr"], 2.5, "annotators[1].skills.ocr: expected an integer, got 2.5"),
        (["annotators", 1, "quality"], 1.5, "annotators[1].quality: must be between 0 and 1"),
        (["annotators", 0, "labels_per_hour"], "fast", "annotators[0].labels_per_hour: expected a number"),
        (["tasks", 1, "id"], "t1", "tasks[1].id: duplicate id 't1' (first at tasks[0])"),
        (["annotators", 1, "id"], "a1", "annotators[1].id: duplicate id 'a1' (first at annotators[0])"),
        (["project_budgets", "p", "max_slots"], -1, "project_budgets.p.max_slots: must be >= 0"),
        (["project_budgets", "p"], {"slots": 1}, "project_budgets.p.slots: unknown field"),
        (["project_budgets", "p"], {}, "project_budgets.p: needs max_slots or budget"),
        (["tasks"], {"t1": {}}, "tasks: expected a list, got an object"),
        (["tasks", 0], "t1", "tasks[0]: expected an object, got a string"),
    ],
)
def test_malformed_fields_name_their_path(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(InstanceError) as error:
        instance_from_json(_with(path, value))
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["tasks", 0, "max_price"], "tasks[0].max_price: missing"),
        (["annotators", 1, "labels_per_hour"], "annotators[1].labels_per_hour: missing"),
        (["annotators"], "annotators: missing"),
    ],
)
def test_missing_fields_name_their_path(path: list[Any], message: str) -> None:
    with pytest.raises(InstanceError) as error:
        instance_from_json(_with(path, None, delete=True))
    assert message in str(error.value)


def test_python_api_is_validated_too() -> None:
    bad = Instance(tasks=(task("t", max_price=1.5),), annotators=())  # type: ignore[arg-type]
    with pytest.raises(InstanceError, match=r"tasks\[0\]\.max_price: expected an integer"):
        solve(bad)
    duplicated = Instance(tasks=(), annotators=(annotator("a"), annotator("a")))
    with pytest.raises(InstanceError, match=r"annotators\[1\]\.id: duplicate id"):
        validate_instance(duplicated)


def test_generator_is_seeded_valid_and_skewed() -> None:
    first = generate_instance(10_000, 1_000, seed=3)
    assert first == generate_instance(10_000, 1_000, seed=3)
    assert first != generate_instance(10_000, 1_000, seed=4)
    validate_instance(first)
    assert instance_from_json(instance_to_json(first)) == first
    by_skill: dict[str, int] = {}
    for t in first.tasks:
        by_skill[t.skill] = by_skill.get(t.skill, 0) + 1
    counts = sorted(by_skill.values(), reverse=True)
    assert counts[0] > 10 * counts[-1], "popular and rare skills"
    assert {t.labels_needed for t in first.tasks} == {1, 2, 3}
    assert sum(t.priority == 1 for t in first.tasks) > len(first.tasks) / 2
    assert all(1 <= level <= 5 for a in first.annotators for level in a.skills.values())
    assert all(5 <= a.capacity <= 50 for a in first.annotators)
