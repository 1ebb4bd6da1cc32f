"""Optimality: flow against an exhaustive search and CP-SAT, greedy never better, guided equals flow."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import (
    GuidedOptions,
    Instance,
    ProjectBudget,
    SolveOptions,
    check_result,
    generate_instance,
    solve,
)
from tests.routing.routing_factories import (
    PROPERTY,
    PROPERTY_SMALL,
    annotator,
    exhaustive_optimum,
    instances,
    objective,
    quality_penalty,
    task,
)

TINY_K = SolveOptions(guided=GuidedOptions(k=1))


@PROPERTY
@given(instances())
def test_flow_equals_exhaustive_optimum(instance: Instance) -> None:
    result = solve(instance, method="flow")
    check_result(instance, result)
    assert result.status == "optimal"
    assert objective(result) == exhaustive_optimum(instance)


@PROPERTY
@given(instances(money=True))
def test_cpsat_holds_money_budgets_exactly(instance: Instance) -> None:
    result = solve(instance, method="cpsat")
    check_result(instance, result)
    assert result.status == "optimal"
    assert objective(result) == exhaustive_optimum(instance)


@PROPERTY_SMALL
@given(instances(max_tasks=8, max_annotators=5))
def test_cpsat_equals_flow(instance: Instance) -> None:
    flow = solve(instance, method="flow")
    cpsat = solve(instance, method="cpsat")
    check_result(instance, cpsat)
    assert cpsat.status == "optimal"
    assert objective(cpsat) == objective(flow)


@PROPERTY
@given(instances(max_tasks=10, max_annotators=6))
def test_greedy_is_never_better_than_flow(instance: Instance) -> None:
    flow = solve(instance, method="flow")
    greedy = solve(instance, method="greedy")
    check_result(instance, greedy)
    check_result(instance, flow)
    assert objective(greedy) <= objective(flow)


@PROPERTY
@given(instances(max_tasks=10, max_annotators=6))
def test_guided_with_one_pair_per_task_equals_flow(instance: Instance) -> None:
    flow = solve(instance, method="flow")
    guided = solve(instance, method="guided", options=TINY_K)
    check_result(instance, guided)
    assert guided.status == "optimal"
    assert guided.stats["certified"] is True
    assert guided.stats["gap_bound"] == 0
    assert objective(guided) == objective(flow)


@PROPERTY
@given(instances(max_tasks=10, max_annotators=6), st.data())
def test_guided_recovers_from_misleading_potentials(instance: Instance, data: st.DataObject) -> None:
    # Arbitrary warm potentials make the first round keep the wrong pair per task (e.g. the priciest);
    # pricing must then find every improving pair, down to a price difference of 1.
    warm = {a.id: data.draw(st.integers(0, 30), label=a.id) for a in instance.annotators}
    flow = solve(instance, method="flow")
    guided = solve(instance, method="guided", warm_potentials=warm, options=TINY_K)
    check_result(instance, guided)
    assert guided.stats["certified"] is True
    assert objective(guided) == objective(flow)


@pytest.mark.parametrize("saving", [1, 2, 7])
def test_pricing_finds_a_saving_of_one_minor_unit(saving: int) -> None:
    # The warm potentials steer the first round to the pricier annotator; pricing must notice the cheaper.
    instance = Instance(
        tasks=(task("t"),),
        annotators=(annotator("pricier", price=8), annotator("cheaper", price=8 - saving)),
    )
    options = SolveOptions(guided=GuidedOptions(k=1))
    result = solve(instance, method="guided", warm_potentials={"cheaper": 50}, options=options)
    check_result(instance, result)
    assert result.stats["rounds"] == 2
    assert [tuple(a) for a in result.assignments] == [("t", "cheaper")]


def test_priority_dominates_any_price_difference() -> None:
    # One slot left in project p: the priority-2 task wins although its only annotator costs 100x more.
    instance = Instance(
        tasks=(
            task("urgent", priority=2, project="p", max_price=1000),
            task("routine", priority=1, project="p", max_price=1000),
        ),
        annotators=(
            annotator("expensive", price=1000, skills={"ocr": 3}),
            annotator("cheap", price=10, skills={"audio": 3}),
        ),
        project_budgets={"p": ProjectBudget(max_slots=1)},
    )
    instance = replace(instance, tasks=(instance.tasks[0], replace(instance.tasks[1], skill="audio")))
    for method in ("flow", "guided", "cpsat"):
        result = solve(instance, method=method)
        check_result(instance, result)
        assert [tuple(a) for a in result.assignments] == [("urgent", "expensive")], method


@pytest.mark.parametrize(("n_tasks", "n_annotators", "seed"), [(300, 40, 1), (600, 60, 2), (900, 90, 3)])
def test_guided_equals_flow_on_generated_instances(n_tasks: int, n_annotators: int, seed: int) -> None:
    instance = generate_instance(n_tasks, n_annotators, seed=seed)
    flow = solve(instance, method="flow")
    guided = solve(instance, method="guided", options=SolveOptions(guided=GuidedOptions(k=1, seed=seed)))
    check_result(instance, flow)
    check_result(instance, guided)
    assert guided.status == "optimal"
    assert guided.stats["certified"] is True
    # One pair per slot cannot hold the optimum: column generation rounds must have happened.
    assert guided.stats["rounds"] > 1
    assert objective(guided) == objective(flow)


@PROPERTY
@given(instances(), st.integers(0, 3))
def test_guided_holding_back_binding_pairs_equals_exhaustive_optimum(
    instance: Instance, safe_rounds: int
) -> None:
    options = SolveOptions(guided=GuidedOptions(k=1, edf_safe_rounds=safe_rounds))
    result = solve(instance, method="guided", options=options)
    check_result(instance, result)
    assert result.stats["certified"] is True
    assert objective(result) == exhaustive_optimum(instance)


@pytest.mark.parametrize(
    ("n_tasks", "n_annotators", "seed", "k"), [(900, 90, 3, 4), (2000, 200, 5, 8), (3000, 300, 2, 32)]
)
def test_holding_back_binding_pairs_keeps_guided_exact(
    n_tasks: int, n_annotators: int, seed: int, k: int
) -> None:
    # One skill pool (4 skills), so that the round log is reported; short deadlines make EDF limits bind.
    instance = generate_instance(n_tasks, n_annotators, n_skills=4, seed=seed)
    flow = solve(instance, method="flow")
    check_result(instance, flow)
    for safe_rounds in (0, 1, 3):
        options = SolveOptions(guided=GuidedOptions(k=k, seed=seed, edf_safe_rounds=safe_rounds))
        guided = solve(instance, method="guided", options=options)
        check_result(instance, guided)
        assert guided.status == "optimal"
        assert guided.stats["certified"] is True
        assert objective(guided) == objective(flow)
        log = guided.stats["round_log"]
        assert isinstance(log, list)
        held_back = sum(entry["held_back_pairs"] for entry in log)
        # The first pricing round found pairs that would make an early bucket bind: they waited.
        assert (held_back > 0) == (safe_rounds > 0)


def test_flow_switches_to_guided_above_the_threshold_and_stays_exact() -> None:
    instance = generate_instance(800, 80, seed=5)
    one_shot = solve(instance, method="flow")
    switched = solve(instance, method="flow", options=SolveOptions(guided_threshold_cells=0))
    assert one_shot.stats["engine"] == "one-shot"
    assert switched.stats["engine"] == "guided"
    assert switched.status == "optimal"
    assert objective(switched) == objective(one_shot)


def test_gap_bound_brackets_the_optimum_when_stopped_early() -> None:
    instance = generate_instance(900, 90, seed=4)
    optimum = solve(instance, method="flow")
    early = solve(instance, method="guided", options=SolveOptions(guided=GuidedOptions(k=2, max_rounds=1)))
    check_result(instance, early)
    assert early.status == "feasible"
    assert early.stats["certified"] is False
    weight = early.stats["priority_weight"]
    assert isinstance(weight, int)

    def combined(result_cost: int, result_priority: int) -> int:
        return result_cost - weight * result_priority

    gap = early.stats["gap_bound"]
    assert isinstance(gap, int)
    assert gap > 0
    early_value = combined(early.cost_total, early.priority_total)
    best_value = combined(optimum.cost_total, optimum.priority_total)
    assert early_value - gap <= best_value <= early_value


def test_warm_potentials_reach_the_same_optimum() -> None:
    instance = generate_instance(900, 90, seed=6)
    options = SolveOptions(guided=GuidedOptions(k=4))
    cold = solve(instance, method="guided", options=options)
    assert cold.potentials, "a congested market has annotators with positive shadow prices"
    warm = solve(instance, method="guided", warm_potentials=cold.potentials, options=options)
    assert warm.stats["certified"] is True
    assert objective(warm) == objective(cold)


def test_sampling_estimate_is_used_on_larger_pools_and_stays_exact() -> None:
    instance = generate_instance(1500, 150, seed=8)
    options = SolveOptions(guided=GuidedOptions(k=6, sample_cells=20_000))
    guided = solve(instance, method="guided", options=options)
    flow = solve(instance, method="flow")
    assert guided.stats["certified"] is True
    assert objective(guided) == objective(flow)


@PROPERTY_SMALL
@given(instances(max_tasks=6, max_annotators=4, quality=True))
def test_production_objective_keeps_the_exact_optimum_and_prefers_quality(instance: Instance) -> None:
    exact = solve(instance, method="flow")
    production = solve(instance, method="flow", objective="production")
    guided = solve(instance, method="guided", objective="production", options=TINY_K)
    cpsat = solve(instance, method="cpsat", objective="production")
    for result in (production, guided, cpsat):
        check_result(instance, result)
        assert objective(result) == objective(exact)
    assert quality_penalty(instance, production) <= quality_penalty(instance, exact)
    assert quality_penalty(instance, production) == quality_penalty(instance, cpsat)
    assert quality_penalty(instance, guided) == quality_penalty(instance, cpsat)
