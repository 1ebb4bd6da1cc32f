"""Excluded pairs: an annotator who already had an item is never assigned it again, by any method."""

from __future__ import annotations

import pytest

from routing import (
    Annotator,
    Instance,
    InstanceError,
    Task,
    check_result,
    instance_from_json,
    instance_to_json,
    solve,
)


def _instance(excluded: frozenset[str]) -> Instance:
    return Instance(
        tasks=(
            Task(
                id="t1",
                skill="s",
                min_level=1,
                labels_needed=2,
                deadline_hours=10.0,
                max_price=100,
                excluded=excluded,
            ),
            Task(id="t2", skill="s", min_level=1, labels_needed=1, deadline_hours=10.0, max_price=100),
        ),
        annotators=(
            Annotator(id="cheap", skills={"s": 3}, price=10, capacity=5, labels_per_hour=10.0),
            Annotator(id="mid", skills={"s": 3}, price=20, capacity=5, labels_per_hour=10.0),
            Annotator(id="dear", skills={"s": 3}, price=30, capacity=5, labels_per_hour=10.0),
        ),
    )


@pytest.mark.parametrize("method", ["flow", "guided", "greedy", "cpsat"])
def test_excluded_pairs_are_never_assigned(method: str) -> None:
    instance = _instance(frozenset({"cheap"}))
    result = solve(instance, method=method)
    check_result(instance, result)
    given = {(a.task, a.annotator) for a in result.assignments}
    assert ("t1", "cheap") not in given
    assert result.assigned == 3
    assert {a for t, a in given if t == "t1"} == {"mid", "dear"}
    assert ("t2", "cheap") in given


def test_exclusions_survive_json_and_are_validated() -> None:
    instance = _instance(frozenset({"cheap", "mid"}))
    document = instance_to_json(instance)
    assert document["tasks"][0]["excluded"] == ["cheap", "mid"]
    assert "excluded" not in document["tasks"][1]
    assert instance_from_json(document) == instance
    document["tasks"][0]["excluded"] = ["cheap", 7]
    with pytest.raises(InstanceError, match=r"tasks\[0\]\.excluded\[1\]"):
        instance_from_json(document)


def test_checker_reports_an_excluded_assignment() -> None:
    from routing.result import Assignment, build_result

    instance = _instance(frozenset({"cheap"}))
    bad = build_result(
        instance, status="optimal", method="flow", assignments=[Assignment("t1", "cheap")], stats={}
    )
    from routing import find_violations

    assert any("excluded" in problem for problem in find_violations(instance, bad))
