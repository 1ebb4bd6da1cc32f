"""Shadow-price-guided pruning with a certificate (column generation) for large instances.

1. Estimate each annotator's shadow price pi_a (the dual of its capacity): from the previous plan
   (`warm_potentials`) or by solving a random sample of the tasks against capacities scaled down to the
   sample's share, a small market with the same congestion.
2. Keep, per task, the k eligible pairs with the lowest estimated reduced cost price_a + pi_a (the task's
   own terms are common to its row). Pruning by price alone sends every task to the same few cheap
   annotators; the shadow price spreads them to where capacity is.
3. Solve the min-cost flow exactly on those pairs and rebuild optimal node potentials from its residual
   graph (routing.potentials, verified arc by arc).
4. Price every eligible pair of the complete graph in one vectorised pass per skill block: the reduced
   cost of (t, a) is d[t] - d[bucket of a for t's deadline]. Add every pair with a negative reduced cost
   and go back to 3. When none is left, the potentials are feasible for the complete graph's residual
   network, so the flow is optimal on the complete graph: the answer is certified.

Stopped early (round or time limit), the potentials still give a lower bound by LP duality: no flow on the
complete graph costs less than cost - gap_bound, where gap_bound is minus the sum of the negative reduced
costs of the pairs not yet in the network (each has capacity 1; complementary slackness holds on the rest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from routing.arrays import Arrays, Buckets, IntArray, build_buckets, iter_blocks, subset_arrays
from routing.exact import EngineSolution, empty_solution
from routing.flow import Network, Objective, build_network, exact_objective, placeable, solve_network
from routing.potentials import annotator_shadow_prices, optimal_potentials
from routing.result import StatValue

INT64_MIN = -(2**63)


@dataclass(frozen=True)
class GuidedOptions:
    """Tuning of the guided method; the defaults suit 10^4-10^5 tasks."""

    k: int = 20  # pairs kept per task in the first round (at least 2 x labels_needed)
    max_rounds: int | None = None  # None: run until certified (or the time limit)
    sample_cells: int = 3_000_000  # size of the sampling solve, in task x annotator cells
    seed: int = 0


@dataclass
class RoundState:
    """One round's network, flow and verified potentials."""

    network: Network
    flows: IntArray
    distance: IntArray


def solve_guided(
    arrays: Arrays,
    options: GuidedOptions,
    *,
    warm_shadow: IntArray | None = None,
    deadline: float | None = None,
    volume: int | None = None,
) -> EngineSolution:
    """Column generation until certified optimal (or out of rounds or time: status "feasible")."""
    started = time.perf_counter()
    arrays = placeable(arrays)
    buckets = build_buckets(arrays)
    objective = exact_objective(arrays, volume)
    stats: dict[str, StatValue] = {"engine": "guided", "priority_weight": objective.priority_weight}
    if warm_shadow is not None:
        shadow = warm_shadow
        stats["estimate"] = "warm"
    else:
        shadow = estimate_shadow_prices(arrays, options)
        stats["estimate"] = "sample" if arrays.block_cells() > options.sample_cells else "none"
    stats["estimate_s"] = time.perf_counter() - started
    pair_tasks, pair_annotators, eligible = select_pairs(arrays, shadow, options.k)
    stats["eligible_pairs"] = eligible
    stats["build_s"] = time.perf_counter() - started
    rounds: list[dict[str, StatValue]] = []
    solving = time.perf_counter()
    while True:
        state = _solve_round(arrays, buckets, objective, pair_tasks, pair_annotators)
        if isinstance(state, str):
            stats.update(solve_s=time.perf_counter() - solving, rounds=len(rounds) + 1, certified=False)
            stats["gap_bound"] = None
            return empty_solution(state, stats, f"min-cost flow reported {state}")
        new_tasks, new_annotators, reduced = price_pairs(arrays, buckets, state.network, state.distance)
        gap = -int(reduced.sum())
        chosen = np.flatnonzero(state.flows[: state.network.n_pairs] > 0)
        rounds.append(
            {
                "round": len(rounds) + 1,
                "arcs": len(state.network.tails),
                "placed": len(chosen),
                "priority": int(arrays.task_priority[pair_tasks[chosen]].sum()),
                "cost": int(arrays.annotator_price[pair_annotators[chosen]].sum()),
                "negative_pairs": len(new_tasks),
                "gap_bound": gap,
                "elapsed_s": time.perf_counter() - started,
            }
        )
        out_of_rounds = options.max_rounds is not None and len(rounds) >= options.max_rounds
        out_of_time = deadline is not None and time.perf_counter() >= deadline
        if len(new_tasks) == 0 or out_of_rounds or out_of_time:
            break
        pair_tasks = np.concatenate([pair_tasks, new_tasks])
        pair_annotators = np.concatenate([pair_annotators, new_annotators])
    certified = len(new_tasks) == 0
    stats.update(
        solve_s=time.perf_counter() - solving,
        arcs=len(state.network.tails),
        rounds=len(rounds),
        certified=certified,
        gap_bound=gap,
        round_log=rounds,
    )
    if not certified:
        stats["stopped"] = "time_limit" if out_of_time else "max_rounds"
    shadow_prices = annotator_shadow_prices(state.network, state.distance, buckets.first, arrays.annotator_price)
    return EngineSolution(
        status="optimal" if certified else "feasible",
        tasks=pair_tasks[chosen],
        annotators=pair_annotators[chosen],
        stats=stats,
        shadow_prices=shadow_prices,
    )


def _solve_round(
    arrays: Arrays, buckets: Buckets, objective: Objective, pair_tasks: IntArray, pair_annotators: IntArray
) -> RoundState | str:
    pair_buckets = buckets.lookup(arrays, pair_tasks, pair_annotators)
    network = build_network(arrays, buckets, objective, pair_tasks, pair_annotators, pair_buckets)
    outcome = solve_network(network)
    if outcome.status != "optimal":
        return outcome.status
    distance, _ = optimal_potentials(network, outcome.flows)
    return RoundState(network=network, flows=outcome.flows, distance=distance)


def select_pairs(arrays: Arrays, shadow: IntArray, k: int) -> tuple[IntArray, IntArray, int]:
    """Per task, the k eligible pairs of lowest price + shadow price; also the count of eligible pairs."""
    key = arrays.annotator_price + shadow
    task_parts: list[IntArray] = []
    annotator_parts: list[IntArray] = []
    eligible = 0
    for block in iter_blocks(arrays):
        order = np.argsort(key[block.annotators], kind="stable")
        mask = block.eligible[:, order]
        eligible += int(np.count_nonzero(mask))
        rank = np.cumsum(mask, axis=1, dtype=np.int32)
        keep_per_task = np.maximum(k, 2 * arrays.task_need[block.tasks])
        rows, cols = np.nonzero(mask & (rank <= keep_per_task[:, None]))
        task_parts.append(block.tasks[rows])
        annotator_parts.append(block.annotators[order][cols])
    if not task_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), 0
    return np.concatenate(task_parts), np.concatenate(annotator_parts), eligible


def price_pairs(
    arrays: Arrays, buckets: Buckets, network: Network, distance: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Every eligible pair with a negative reduced cost d[task] - d[bucket], with that reduced cost."""
    task_potential = distance[network.task_node0 : network.bucket_node0]
    bucket_potential = distance[network.bucket_node0 :]
    # A pair can only be negative if the task's potential is below its annotator's largest bucket potential:
    # a cheap dense test that leaves very few cells for the exact bucket lookup.
    best_bucket = np.full(arrays.n_annotators, INT64_MIN, dtype=np.int64)
    np.maximum.at(best_bucket, buckets.owner, bucket_potential)
    task_parts: list[IntArray] = []
    annotator_parts: list[IntArray] = []
    reduced_parts: list[IntArray] = []
    for block in iter_blocks(arrays):
        below = task_potential[block.tasks][:, None] < best_bucket[block.annotators][None, :]
        rows, cols = np.nonzero(block.eligible & below)
        if len(rows) == 0:
            continue
        tasks = block.tasks[rows]
        annotators = block.annotators[cols]
        reduced = task_potential[tasks] - bucket_potential[buckets.lookup(arrays, tasks, annotators)]
        negative = reduced < 0
        task_parts.append(tasks[negative])
        annotator_parts.append(annotators[negative])
        reduced_parts.append(reduced[negative])
    if not task_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return np.concatenate(task_parts), np.concatenate(annotator_parts), np.concatenate(reduced_parts)


def estimate_shadow_prices(arrays: Arrays, options: GuidedOptions) -> IntArray:
    """Shadow prices from an exact solve of a random sample of tasks against proportionally scaled capacities."""
    cells = arrays.block_cells()
    if cells <= options.sample_cells or arrays.n_tasks == 0:
        # Small enough that pricing rounds are cheap: start from prices alone.
        return np.zeros(arrays.n_annotators, dtype=np.int64)
    share = options.sample_cells / cells
    rng = np.random.default_rng(options.seed)
    sample_tasks = np.flatnonzero(rng.random(arrays.n_tasks) < share)
    everyone = np.arange(arrays.n_annotators, dtype=np.int64)
    sample = subset_arrays(arrays, sample_tasks, everyone)
    # Stochastic rounding keeps the expected scaled capacity exact even for capacities of a few labels.
    scaled = np.floor(arrays.annotator_capacity * share + rng.random(arrays.n_annotators)).astype(np.int64)
    sample = replace(sample, annotator_capacity=scaled)
    buckets = build_buckets(sample)
    objective = exact_objective(sample)
    pair_tasks, pair_annotators, _ = select_pairs(sample, np.zeros(sample.n_annotators, dtype=np.int64), 2**30)
    state = _solve_round(sample, buckets, objective, pair_tasks, pair_annotators)
    if isinstance(state, str):
        return np.zeros(arrays.n_annotators, dtype=np.int64)
    return annotator_shadow_prices(state.network, state.distance, buckets.first, sample.annotator_price)
