"""Optimality: flow against an exhaustive search and CP-SAT, greedy never better, guided equals flow."""

from __future__ import annotations

import pytest
from hypothesis import given

from routing import GuidedOptions, Instance, SolveOptions, check_result, generate_instance, solve
from tests.routing.routing_factories import (
    PROPERTY,
    PROPERTY_SMALL,
    exhaustive_optimum,
    instances,
    objective,
    quality_penalty,
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
