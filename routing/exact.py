"""The one-shot exact solve on every eligible pair, and the engine's internal answer type."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from routing.arrays import Arrays, IntArray, build_buckets, eligible_pairs
from routing.flow import build_network, exact_objective, placeable, solve_network
from routing.potentials import optimal_potentials
from routing.result import StatValue
from routing.tiebreak import quality_tiebreak


@dataclass
class EngineSolution:
    """Assignments as local index arrays, a status word and statistics, before ids are attached."""

    status: str
    tasks: IntArray
    annotators: IntArray
    stats: dict[str, StatValue] = field(default_factory=dict)
    shadow_prices: IntArray | None = None  # per local annotator, when the dual was computed
    message: str = ""


def empty_solution(status: str, stats: dict[str, StatValue], message: str = "") -> EngineSolution:
    """A solution that assigns nothing."""
    none = np.zeros(0, dtype=np.int64)
    return EngineSolution(status=status, tasks=none, annotators=none.copy(), stats=stats, message=message)


def solve_exact(
    arrays: Arrays, *, volume: int | None = None, prefer_quality: bool = False, weight: int | None = None
) -> EngineSolution:
    """Min-cost flow over all eligible pairs: the exact lexicographic optimum (or cheapest at `volume`)."""
    started = time.perf_counter()
    arrays = placeable(arrays)
    buckets = build_buckets(arrays)
    pair_tasks, pair_annotators = eligible_pairs(arrays)
    stats: dict[str, StatValue] = {"engine": "one-shot", "eligible_pairs": len(pair_tasks), "rounds": 1}
    objective = exact_objective(arrays, volume, weight)
    # Limits that no set of these pairs can exceed are dropped: exact, and fewer binding chains to solve.
    chain, merged = buckets.chain.merge_redundant(buckets.lookup(arrays, pair_tasks, pair_annotators))
    pair_buckets = merged[buckets.lookup(arrays, pair_tasks, pair_annotators)]
    network = build_network(arrays, chain, objective, pair_tasks, pair_annotators, pair_buckets)
    stats["arcs"] = len(network.tails)
    stats["priority_weight"] = objective.priority_weight
    stats["build_s"] = time.perf_counter() - started
    solving = time.perf_counter()
    outcome = solve_network(network)
    stats["solve_s"] = time.perf_counter() - solving
    stats["certified"] = outcome.status == "optimal"
    stats["gap_bound"] = 0 if outcome.status == "optimal" else None
    if outcome.status != "optimal":
        return empty_solution(outcome.status, stats, outcome.message)
    flows = outcome.flows
    if prefer_quality:
        potentials, _ = optimal_potentials(network, flows)
        flows = quality_tiebreak(arrays, network, flows, potentials, pair_annotators)
    chosen = np.flatnonzero(flows[: network.n_pairs] > 0)
    return EngineSolution(
        status="optimal", tasks=pair_tasks[chosen], annotators=pair_annotators[chosen], stats=stats
    )
