"""Edge cases: empty sides, nothing eligible, zero capacity, tight deadlines, ties, overflow, budgets."""

from __future__ import annotations

import pytest

from routing import Instance, InstanceError, ProjectBudget, SolveOptions, check_result, solve
from tests.routing.routing_factories import annotator, objective, task

METHODS = ("flow", "guided", "greedy", "cpsat")


def _solve_all(instance: Instance) -> dict[str, object]:
    results = {}
    for method in METHODS:
        result = solve(instance, method=method)
        check_result(instance, result)
        results[method] = result
    return results


@pytest.mark.parametrize("method", METHODS)
def test_no_annotators_leaves_everything_unfilled(method: str) -> None:
    instance = Instance(tasks=(task("t1", labels_needed=2), task("t2")), annotators=())
    result = solve(instance, method=method)
    check_result(instance, result)
    assert result.status == ("feasible" if method == "greedy" else "optimal")
    assert result.assignments == ()
    assert dict(result.unfilled) == {"t1": 2, "t2": 1}


@pytest.mark.parametrize("method", METHODS)
def test_no_tasks_is_optimal_and_empty(method: str) -> None:
    instance = Instance(tasks=(), annotators=(annotator("a"),))
    result = solve(instance, method=method)
    check_result(instance, result)
    assert result.assigned == 0
    assert dict(result.unfilled) == {}


@pytest.mark.parametrize("method", ["flow", "guided", "cpsat"])
def test_no_eligible_pairs_is_optimal_with_everything_unfilled(method: str) -> None:
    instance = Instance(
        tasks=(
            task("wrong-skill", skill="audio"),
            task("too-cheap", max_price=50),
            task("too-hard", min_level=5),
        ),
        annotators=(annotator("a", price=100, skills={"ocr": 3}),),
    )
    result = solve(instance, method=method)
    check_result(instance, result)
    assert result.status == "optimal"
    assert result.assigned == 0
    assert dict(result.unfilled) == {"wrong-skill": 1, "too-cheap": 1, "too-hard": 1}


def test_zero_capacity_annotators_take_nothing() -> None:
    instance = Instance(tasks=(task("t"),), annotators=(annotator("idle", capacity=0), annotator("busy")))
    for result in _solve_all(instance).values():
        assert [tuple(a) for a in result.assignments] == [("t", "busy")]


def test_deadline_shorter_than_one_label_is_unfillable() -> None:
    # 10 labels per hour: a label takes 6 minutes, the deadline is in 3.
    instance = Instance(tasks=(task("rush", deadline_hours=0.05),), annotators=(annotator("a"),))
    for result in _solve_all(instance).values():
        assert result.assigned == 0
        assert dict(result.unfilled) == {"rush": 1}


def test_edf_limit_counts_earlier_deadlines() -> None:
    # 2 labels per hour: by 1 h two labels, by 1.5 h three. Three tasks due at 1 h cannot all be taken;
    # the 1.5 h task fits after two of them.
    instance = Instance(
        tasks=(
            task("a1", deadline_hours=1.0, priority=2),
            task("a2", deadline_hours=1.0, priority=2),
            task("a3", deadline_hours=1.0, priority=2),
            task("b", deadline_hours=1.5),
        ),
        annotators=(annotator("slow", labels_per_hour=2.0, capacity=5),),
    )
    results = _solve_all(instance)
    for method in ("flow", "guided", "cpsat"):
        result = results[method]
        assert result.priority_total == 5, method
        assert result.assigned == 3, method
        assert "b" in {a.task for a in result.assignments}, method


def test_distinct_annotators_per_task() -> None:
    instance = Instance(tasks=(task("t", labels_needed=3),), annotators=(annotator("only", capacity=10),))
    for result in _solve_all(instance).values():
        assert result.assigned == 1
        assert dict(result.unfilled) == {"t": 2}


def test_price_ties_give_equal_optima_across_methods() -> None:
    instance = Instance(
        tasks=tuple(task(f"t{i}", labels_needed=2) for i in range(4)),
        annotators=tuple(annotator(f"a{i}", price=100, capacity=3) for i in range(3)),
    )
    results = _solve_all(instance)
    values = {method: objective(result) for method, result in results.items()}
    assert values["flow"] == values["guided"] == values["cpsat"] == (8, -800)
    assert values["greedy"] <= values["flow"]


def test_priority_zero_tasks_are_never_paid_for() -> None:
    instance = Instance(
        tasks=(task("optional", priority=0), task("wanted")),
        annotators=(annotator("a", capacity=5),),
    )
    for method in ("flow", "guided", "cpsat"):
        result = solve(instance, method=method)
        assert [tuple(a) for a in result.assignments] == [("wanted", "a")], method


def test_max_slots_budget_limits_a_project() -> None:
    instance = Instance(
        tasks=(*(task(f"t{i}", project="p") for i in range(5)), task("free")),
        annotators=(annotator("a", capacity=10),),
        project_budgets={"p": ProjectBudget(max_slots=2)},
    )
    for result in _solve_all(instance).values():
        assert sum(1 for a in result.assignments if a.task != "free") == 2
        assert "free" in {a.task for a in result.assignments}


def test_slot_limited_project_can_make_fewer_slots_optimal() -> None:
    # Regression (found by hypothesis): one priority-2 slot at price 0 beats two priority-1 slots at price
    # 1 that need the project's last slot and the annotator the priority-2 task needs. A project limit
    # breaks the matroid structure under "maximum flow, then minimum cost", so it must not be used here.
    instance = Instance(
        tasks=(
            task("first", priority=2, project="p", max_price=0, deadline_hours=0.5),
            task("second", priority=1, project="p", max_price=1, deadline_hours=0.5),
            task("third", priority=1, max_price=0, deadline_hours=0.5),
        ),
        annotators=(
            annotator("paid", price=1, capacity=1, labels_per_hour=2.0),
            annotator("free", price=0, capacity=1, labels_per_hour=2.0),
        ),
        project_budgets={"p": ProjectBudget(max_slots=1)},
    )
    for method in ("flow", "guided", "cpsat"):
        result = solve(instance, method=method)
        check_result(instance, result)
        assert (result.priority_total, result.cost_total, result.assigned) == (2, 0, 1), method


def test_budgets_passed_to_solve_override_the_instance() -> None:
    instance = Instance(
        tasks=tuple(task(f"t{i}", project="p") for i in range(3)), annotators=(annotator("a"),)
    )
    result = solve(instance, project_budgets={"p": ProjectBudget(max_slots=1)})
    check_result(instance, result, {"p": ProjectBudget(max_slots=1)})
    assert result.assigned == 1


def test_money_budget_is_exact_in_cpsat_and_refused_by_flow() -> None:
    instance = Instance(
        tasks=tuple(task(f"t{i}", project="p") for i in range(3)),
        annotators=(annotator("cheap", price=30, capacity=1), annotator("dear", price=80, capacity=5)),
        project_budgets={"p": ProjectBudget(budget=110)},
    )
    result = solve(instance, method="cpsat")
    check_result(instance, result)
    assert result.cost_total == 110
    assert result.assigned == 2
    for method in ("flow", "guided"):
        with pytest.raises(InstanceError, match=r"project_budgets\.p\.budget: .*cpsat"):
            solve(instance, method=method)
    greedy = solve(instance, method="greedy")
    check_result(instance, greedy)


@pytest.mark.parametrize("method", ["flow", "guided", "cpsat"])
def test_huge_prices_report_overflow_instead_of_wrapping(method: str) -> None:
    # M is about 3 x 10**15; times priority 10**4 and OR-Tools' cost-scaling factor: beyond int64.
    instance = Instance(
        tasks=(task("t", max_price=10**15, priority=10**4, labels_needed=3),),
        annotators=tuple(annotator(f"a{i}", price=10**15 - i, capacity=1) for i in range(3)),
    )
    result = solve(instance, method=method)
    check_result(instance, result)
    assert result.status == "overflow"
    assert "int64" in result.message
    assert result.assignments == ()


def test_prices_beyond_exact_integers_report_overflow_for_every_method() -> None:
    instance = Instance(tasks=(task("t", max_price=2**60),), annotators=(annotator("a", price=2**60),))
    for method in METHODS:
        result = solve(instance, method=method)
        assert result.status == "overflow", method
        assert "price" in result.message


def test_large_but_representable_prices_are_solved_exactly() -> None:
    instance = Instance(
        tasks=(task("t", max_price=10**9, labels_needed=2),),
        annotators=(annotator("a", price=10**9), annotator("b", price=10**9 - 1)),
    )
    for method in ("flow", "guided", "cpsat"):
        result = solve(instance, method=method)
        assert result.status == "optimal"
        assert result.cost_total == 2 * 10**9 - 1


def test_independent_skill_pools_are_solved_as_components_in_worker_processes() -> None:
    instance = Instance(
        tasks=(task("o1"), task("o2"), task("s1", skill="audio"), task("s2", skill="audio")),
        annotators=(
            annotator("reader", skills={"ocr": 3}, capacity=2),
            annotator("listener", skills={"audio": 3}, capacity=1),
        ),
    )
    parallel = SolveOptions(parallel_min_cells=0, workers=2)
    result = solve(instance, options=parallel)
    check_result(instance, result)
    assert result.stats["components"] == 2
    assert result.stats["parallel"] == "2 processes"
    assert result.assigned == 3
    assert objective(result) == objective(solve(instance, options=SolveOptions(workers=1)))


def test_bad_method_and_objective_are_errors() -> None:
    instance = Instance(tasks=(), annotators=())
    with pytest.raises(InstanceError, match="method"):
        solve(instance, method="simplex")
    with pytest.raises(InstanceError, match="objective"):
        solve(instance, objective="fastest")
