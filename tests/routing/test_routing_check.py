"""The checker catches every kind of violation (so that the tests relying on it can fail)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from routing import (
    Assignment,
    Instance,
    InvalidResultError,
    ProjectBudget,
    Result,
    check_result,
    find_violations,
    solve,
)
from routing.result import build_result
from tests.routing.routing_factories import annotator, task

INSTANCE = Instance(
    tasks=(
        task("easy", labels_needed=2, max_price=200, project="p"),
        task("hard", min_level=5, max_price=200),
        task("cheap", max_price=50),
        task("soon", deadline_hours=0.5, project="p"),
        task("asap", deadline_hours=0.5),
        task("later", deadline_hours=24.0),
    ),
    annotators=(
        annotator("ann", price=100, capacity=2, labels_per_hour=2.0),
        annotator("bob", price=120, capacity=5, labels_per_hour=10.0),
        annotator("cid", price=40, capacity=5, labels_per_hour=10.0, skills={"audio": 3}),
    ),
    project_budgets={"p": ProjectBudget(max_slots=2, budget=250)},
)


def _result(*pairs: tuple[str, str]) -> Result:
    return build_result(
        INSTANCE,
        status="feasible",
        method="test",
        assignments=[Assignment(t, a) for t, a in pairs],
        stats={},
    )


def test_a_valid_result_passes() -> None:
    result = _result(("easy", "ann"), ("easy", "bob"), ("later", "bob"))
    assert find_violations(INSTANCE, result) == []
    check_result(INSTANCE, result)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("hard", "bob")], "lacks level 5"),
        ([("easy", "cid")], "lacks level"),
        ([("cheap", "bob")], "costs 120 > max_price 50"),
        ([("easy", "bob"), ("easy", "bob")], "same annotator more than once"),
        ([("later", "ann"), ("later", "bob"), ("later", "ann")], "got 3 labels > labels_needed 1"),
        ([("easy", "ann"), ("later", "ann"), ("hard", "ann")], "got 3 tasks > capacity 2"),
        ([("soon", "ann"), ("asap", "ann")], "cannot finish"),
        ([("easy", "ann"), ("easy", "bob"), ("soon", "bob")], "got 3 slots > max_slots 2"),
        ([("easy", "bob"), ("soon", "bob"), ("later", "bob")], ""),
    ],
)
def test_each_violation_is_reported(pairs: list[tuple[str, str]], expected: str) -> None:
    violations = find_violations(INSTANCE, _result(*pairs))
    if expected:
        assert any(expected in v for v in violations), violations
        with pytest.raises(InvalidResultError):
            check_result(INSTANCE, _result(*pairs))
    else:
        assert violations == []


def test_unknown_ids_are_reported() -> None:
    valid = _result(("easy", "ann"))
    forged = replace(valid, assignments=(Assignment("ghost", "bob"),))
    assert any("unknown task or annotator" in v for v in find_violations(INSTANCE, forged))


def test_money_budget_violation_is_reported() -> None:
    budgets = {"p": ProjectBudget(budget=150)}
    violations = find_violations(INSTANCE, _result(("easy", "ann"), ("easy", "bob")), budgets)
    assert any("spends 220 > budget 150" in v for v in violations)


def test_inconsistent_totals_are_reported() -> None:
    good = _result(("easy", "ann"))
    assert find_violations(INSTANCE, good) == []
    for field, value in (("assigned", 5), ("priority_total", 9), ("cost_total", 1), ("unfilled", {})):
        assert find_violations(INSTANCE, replace(good, **{field: value})), field
    assert find_violations(INSTANCE, replace(good, status="overflow")), "overflow with assignments"


def test_solver_results_pass_the_checker() -> None:
    check_result(INSTANCE, solve(INSTANCE, method="cpsat"))
    slots_only = replace(INSTANCE, project_budgets={"p": ProjectBudget(max_slots=2)})
    for method in ("flow", "guided", "greedy"):
        check_result(slots_only, solve(slots_only, method=method))
