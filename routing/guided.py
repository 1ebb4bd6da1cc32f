"""Shadow-price-guided pruning with a certificate (column generation) for large instances.

1. Estimate each annotator's shadow price pi_a (the dual of its capacity): from the previous plan
   (`warm_potentials`) or by solving a random sample of the tasks against capacities scaled down to the
   sample's share, a small market with the same congestion.
2. Keep, per task, about k pairs: half of lowest estimated reduced cost price_a + pi_a (the task's own
   terms are common to its row), half uniformly at random (see `select_pairs` for why).
3. Solve the min-cost flow exactly on those pairs and rebuild optimal node potentials from its residual
   graph (routing.potentials, verified arc by arc).
4. Price every eligible pair of the complete graph in one vectorised pass per skill block: the reduced
   cost of (t, a) is p[t] - p[bucket of a for t's deadline]. Add the pairs with a negative reduced cost
   (each task's most negative ones: partial pricing, see GuidedOptions.new_per_task) and go back to 3.
   When none is left, the potentials are feasible for the complete graph's residual network, so the flow
   is optimal on the complete graph: the answer is certified.

Each round's network merges the deadline buckets whose EDF limit its pairs cannot exceed (binding EDF
chains are what makes OR-Tools slow here: 2.8x on the same pairs at 100k x 10k). The merged network is a relaxation of the complete one
whose optimum, on these pairs, is feasible for the complete one; so a certificate for the relaxation is a
certificate for the original. For the same reason the first round's guess leaves out the pairs that would
make an early bucket bind, and the first pricing round holds back, by the same rule, the new pairs that
would do so for a price saving only (GuidedOptions.edf_safe_rounds): later rounds add those still
negative then. At 100k x 10k this brings the answer within 0.02% of the optimum, every slot placed, in
round 2, and certification in 2-3 rounds, with round networks that stay nearly free of binding chains.

Stopped early (round or time limit), the potentials still give a lower bound by LP duality: no flow on the
complete graph costs less than cost - gap_bound, where gap_bound is minus the sum of the negative reduced
costs of the pairs not yet in the network (each has capacity 1; complementary slackness holds on the rest).
The bound is in objective units: price - priority_weight x priority.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from routing.arrays import (
    Arrays,
    BoolArray,
    BucketChain,
    Buckets,
    IntArray,
    build_buckets,
    iter_blocks,
    subset_arrays,
)
from routing.exact import EngineSolution, empty_solution
from routing.flow import Network, Objective, build_network, exact_objective, placeable, solve_network
from routing.potentials import annotator_shadow_prices, optimal_potentials
from routing.result import StatValue
from routing.tiebreak import quality_tiebreak

INT64_MIN = -(2**63)
# Leading columns over which `first_true` counts before falling back to a row's full width.
FIRST_TRUE_WINDOW = 256


@dataclass(frozen=True)
class GuidedOptions:
    """Tuning of the guided method; the defaults suit 10^4-10^5 tasks."""

    # Pairs kept per task in the first round (at least labels_needed). At 100k x 10k, CPU to certification
    # summed over the pools (one run each): k = 16 30 s (3 rounds on the largest pool), k = 24 and 32
    # 20 s (2 rounds), k = 48 25 s.
    k: int = 32
    # Partial pricing: per round, add at most this many of each task's most negative pairs (None: all).
    # When slots are short every unplaced task prices negative against almost every annotator (3.3M
    # pairs at 100k x 10k, of which a few hundred matter); adding them all made the next round 6x slower,
    # adding 8 per task took 6 rounds, 64 per task 3.
    new_per_task: int | None = 64
    # Pricing rounds (after the first) whose new pairs follow the first round's EDF-safe rule, except the
    # pairs that gain priority (see `hold_back_binding`); later rounds add every pair found. At 100k x 10k
    # one such round made round 2's flow ~2.5x faster on the largest pool (41 binding buckets instead of
    # 570) and still reached the optimum there; 0 adds every pair from round 2 on.
    edf_safe_rounds: int = 1
    max_rounds: int | None = None  # None: run until certified (or the time limit)
    sample_cells: int = 3_000_000  # size of the sampling solve, in task x annotator cells
    seed: int = 0


@dataclass
class RoundState:
    """One round's network (on merged buckets), flow and verified potentials, with step timings."""

    network: Network
    objective: Objective
    chain: BucketChain
    bucket_of_pair: IntArray  # original bucket of each pair
    merged: IntArray  # original bucket -> bucket of `chain`
    flows: IntArray
    distance: IntArray
    flow_s: float
    potentials_s: float
    passes: int

    def bucket_potential(self) -> IntArray:
        """Potential of every original bucket (that of the merged bucket holding it)."""
        return self.distance[self.network.bucket_node0 + self.merged]


def solve_guided(
    arrays: Arrays,
    options: GuidedOptions,
    *,
    warm_shadow: IntArray | None = None,
    deadline: float | None = None,
    volume: int | None = None,
    prefer_quality: bool = False,
    weight: int | None = None,
) -> EngineSolution:
    """Column generation until certified optimal (or out of rounds or time: status "feasible")."""
    started = time.perf_counter()
    arrays = placeable(arrays)
    buckets = build_buckets(arrays)
    objective = exact_objective(arrays, volume, weight)
    stats: dict[str, StatValue] = {"engine": "guided", "priority_weight": objective.priority_weight}
    if warm_shadow is not None:
        shadow = warm_shadow
        stats["estimate"] = "warm"
    else:
        shadow = estimate_shadow_prices(arrays, options)
        stats["estimate"] = "sample" if arrays.block_cells() > options.sample_cells else "none"
    stats["estimate_s"] = round(time.perf_counter() - started, 4)
    rng = np.random.default_rng(options.seed)
    pair_tasks, pair_annotators, eligible = select_pairs(arrays, shadow, options.k, rng)
    keep = edf_guess(arrays, buckets, pair_tasks, pair_annotators, rng)
    pair_tasks, pair_annotators = pair_tasks[keep], pair_annotators[keep]
    stats["eligible_pairs"] = eligible
    stats["build_s"] = round(time.perf_counter() - started, 4)
    rounds: list[dict[str, StatValue]] = []
    solving = time.perf_counter()
    while True:
        state = solve_round(arrays, buckets, objective, pair_tasks, pair_annotators)
        if isinstance(state, str):
            stats.update(solve_s=time.perf_counter() - solving, rounds=len(rounds) + 1, certified=False)
            stats["gap_bound"] = None
            return empty_solution(state, stats, f"min-cost flow reported {state}")
        pricing = time.perf_counter()
        existing = pair_keys(arrays, pair_tasks, pair_annotators)
        new_tasks, new_annotators, reduced = price_pairs(arrays, buckets, state, existing)
        pricing_s = time.perf_counter() - pricing
        gap = -int(reduced.sum())
        negative = len(new_tasks)
        if options.new_per_task is not None:
            top = most_negative_per_task(new_tasks, reduced, options.new_per_task)
            new_tasks, new_annotators, reduced = new_tasks[top], new_annotators[top], reduced[top]
        held_back = 0
        if len(rounds) < options.edf_safe_rounds:
            now = hold_back_binding(
                arrays, buckets, objective, state.bucket_of_pair, new_tasks, new_annotators, reduced
            )
            # Holding back every pair would only solve the same network again.
            if now.any():
                held_back = len(new_tasks) - int(np.count_nonzero(now))
                new_tasks, new_annotators = new_tasks[now], new_annotators[now]
        chosen = np.flatnonzero(state.flows[: state.network.n_pairs] > 0)
        rounds.append(
            {
                "round": len(rounds) + 1,
                "arcs": len(state.network.tails),
                "binding_buckets": int(state.chain.count - np.count_nonzero(state.chain.is_last())),
                "placed": len(chosen),
                "priority": int(arrays.task_priority[pair_tasks[chosen]].sum()),
                "cost": int(arrays.annotator_price[pair_annotators[chosen]].sum()),
                "negative_pairs": negative,
                "added_pairs": len(new_tasks),
                "held_back_pairs": held_back,
                "gap_bound": gap,
                "flow_s": round(state.flow_s, 3),
                "potentials_s": round(state.potentials_s, 3),
                "potential_passes": state.passes,
                "pricing_s": round(pricing_s, 3),
                "elapsed_s": round(time.perf_counter() - started, 3),
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
        solve_s=round(time.perf_counter() - solving, 4),
        arcs=len(state.network.tails),
        rounds=len(rounds),
        certified=certified,
        gap_bound=gap,
        round_log=rounds,
    )
    if not certified:
        stats["stopped"] = "time_limit" if out_of_time else "max_rounds"
    shadow_prices = annotator_shadow_prices(
        state.network, state.distance, state.chain.first, arrays.annotator_price
    )
    if prefer_quality:
        stats["tiebreak"] = "complete graph" if certified else "restricted graph"
        chosen_tasks, chosen_annotators = _prefer_quality(arrays, buckets, state, pair_tasks, pair_annotators)
    else:
        chosen_tasks, chosen_annotators = pair_tasks[chosen], pair_annotators[chosen]
    return EngineSolution(
        status="optimal" if certified else "feasible",
        tasks=chosen_tasks,
        annotators=chosen_annotators,
        stats=stats,
        shadow_prices=shadow_prices,
    )


def solve_round(
    arrays: Arrays, buckets: Buckets, objective: Objective, pair_tasks: IntArray, pair_annotators: IntArray
) -> RoundState | str:
    """Solve the flow on the given pairs (buckets merged where they cannot bind) and its potentials."""
    started = time.perf_counter()
    bucket_of_pair = buckets.lookup(arrays, pair_tasks, pair_annotators)
    chain, merged = buckets.chain.merge_redundant(bucket_of_pair)
    network = build_network(arrays, chain, objective, pair_tasks, pair_annotators, merged[bucket_of_pair])
    outcome = solve_network(network)
    if outcome.status != "optimal":
        return outcome.status
    solved = time.perf_counter()
    distance, passes = optimal_potentials(network, outcome.flows)
    return RoundState(
        network=network,
        objective=objective,
        chain=chain,
        bucket_of_pair=bucket_of_pair,
        merged=merged,
        flows=outcome.flows,
        distance=distance,
        flow_s=solved - started,
        potentials_s=time.perf_counter() - solved,
        passes=passes,
    )


def _prefer_quality(
    arrays: Arrays, buckets: Buckets, state: RoundState, pair_tasks: IntArray, pair_annotators: IntArray
) -> tuple[IntArray, IntArray]:
    # Pairs outside the network with reduced cost 0 belong to the optimal face too: add them as free arcs.
    # Their buckets are those of the merged chain, on which the potentials are optimal.
    existing = pair_keys(arrays, pair_tasks, pair_annotators)
    zero_tasks, zero_annotators, _ = price_pairs(arrays, buckets, state, existing, include_zero=True)
    all_tasks = np.concatenate([pair_tasks, zero_tasks])
    all_annotators = np.concatenate([pair_annotators, zero_annotators])
    merged_buckets = state.merged[buckets.lookup(arrays, all_tasks, all_annotators)]
    network = build_network(arrays, state.chain, state.objective, all_tasks, all_annotators, merged_buckets)
    old = state.network.n_pairs
    flows = np.concatenate([state.flows[:old], np.zeros(len(zero_tasks), dtype=np.int64), state.flows[old:]])
    final = quality_tiebreak(arrays, network, flows, state.distance, all_annotators)
    chosen = np.flatnonzero(final[: network.n_pairs] > 0)
    return all_tasks[chosen], all_annotators[chosen]


def select_pairs(
    arrays: Arrays, shadow: IntArray, k: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, int]:
    """Per task, ~k/2 eligible pairs of lowest price + shadow price and ~k/2 uniformly random ones.

    The random half matters as much as the cheap half. When slots are short, every full annotator has
    about the same shadow price (the value of the slot it would have to drop), so ranking alone cannot
    tell which full annotator a task needs; a random k-out subgraph keeps enough diversity for the
    restricted flow to place nearly as many slots as the complete graph, and the pricing rounds repair
    the rest. Also returns the number of eligible pairs.
    """
    key = arrays.annotator_price + shadow
    cheap = max(1, k - k // 2)
    task_parts: list[IntArray] = []
    annotator_parts: list[IntArray] = []
    eligible = 0
    for block in iter_blocks(arrays):
        order = np.argsort(key[block.annotators], kind="stable")
        mask = block.eligible[:, order]
        columns = block.annotators[order]
        degree = np.count_nonzero(mask, axis=1)
        eligible += int(degree.sum())
        keep_cheap = np.maximum(cheap, arrays.task_need[block.tasks])
        keep = first_true(mask, keep_cheap)
        # Bernoulli sampling: each further eligible pair with probability (k - cheap) / remaining degree.
        remaining = np.maximum(degree - keep_cheap, 1)
        keep |= rng.random(mask.shape, dtype=np.float32) < ((k - cheap) / remaining)[:, None]
        rows, cols = np.nonzero(mask & keep)
        task_parts.append(block.tasks[rows])
        annotator_parts.append(columns[cols])
    if not task_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), 0
    return np.concatenate(task_parts), np.concatenate(annotator_parts), eligible


def first_true(mask: BoolArray, count: IntArray) -> BoolArray:
    """Per row, the first count[row] true cells of `mask` (all of them if the row has fewer).

    A running count over a leading window of columns decides most rows; only the rows whose window holds
    fewer than `count` true cells are counted over their full width.
    """
    window = min(mask.shape[1], max(FIRST_TRUE_WINDOW, 4 * int(count.max(initial=0))))
    rank = np.cumsum(mask[:, :window], axis=1, dtype=np.int32)
    keep = np.zeros(mask.shape, dtype=bool)
    keep[:, :window] = rank <= count[:, None]
    if window < mask.shape[1]:
        short = np.flatnonzero(rank[:, -1] < count)
        full = np.cumsum(mask[short], axis=1, dtype=np.int32)
        keep[short] = full <= count[short, None]
    return keep


def edf_guess(
    arrays: Arrays,
    buckets: Buckets,
    pair_tasks: IntArray,
    pair_annotators: IntArray,
    rng: np.random.Generator,
) -> BoolArray:
    """Mask of the pairs to keep so that no early deadline bucket can bind (higher priority kept first).

    Per annotator, pairs are ordered by bucket (and by priority, then at random, within a bucket); see
    `edf_safe` for the rule.
    """
    bucket_of_pair = buckets.lookup(arrays, pair_tasks, pair_annotators)
    within = (rng.random(len(pair_tasks)), -arrays.task_priority[pair_tasks])
    return edf_safe(buckets.chain, bucket_of_pair, within, np.zeros(len(pair_tasks), dtype=bool))


def edf_safe(
    chain: BucketChain,
    bucket_of_pair: IntArray,
    within: tuple[NDArray[Any], ...],
    forced: BoolArray,
) -> BoolArray:
    """Mask of the pairs to keep so that, forced pairs aside, no early deadline bucket can bind.

    Per annotator, pairs are ordered by bucket, and within a bucket by the `within` keys (least
    significant first, as for np.lexsort); a pair in a bucket of EDF limit v that is not the annotator's
    last is kept only if fewer than v pairs come before it (or if it is forced). Without forced pairs, at
    most v kept pairs then lie in buckets up to that one, so its limit cannot bind.
    """
    order = np.lexsort((*within, bucket_of_pair))
    sorted_buckets = bucket_of_pair[order]
    owner = chain.owner[sorted_buckets]
    position = np.arange(len(order)) - np.searchsorted(owner, owner)
    keep_sorted = chain.is_last()[sorted_buckets] | (position < chain.value[sorted_buckets]) | forced[order]
    keep = np.zeros(len(order), dtype=bool)
    keep[order[keep_sorted]] = True
    return keep


def hold_back_binding(
    arrays: Arrays,
    buckets: Buckets,
    objective: Objective,
    network_buckets: IntArray,
    new_tasks: IntArray,
    new_annotators: IntArray,
    reduced: IntArray,
) -> BoolArray:
    """Mask of the new pairs to add now: those that keep early deadline buckets from binding, and those
    that gain priority.

    `network_buckets`: the (original) bucket of each pair already in the network. Those pairs count
    first; new pairs follow in each bucket, most negative first. A reduced cost below -M/2 (M the
    priority weight) marks a pair that places more priority rather than one that saves price (price
    terms are far smaller than M in practice): those are always added, since the slots they place are
    what the first round's EDF guess tends to miss. The rest wait for a later round, which adds every pair
    still negative then; the certificate is unaffected.
    """
    old = len(network_buckets)
    bucket_of_pair = np.concatenate([network_buckets, buckets.lookup(arrays, new_tasks, new_annotators)])
    is_new = np.zeros(len(bucket_of_pair), dtype=bool)
    is_new[old:] = True
    rank = np.zeros(len(bucket_of_pair), dtype=np.int64)
    rank[old:] = reduced
    forced = ~is_new
    forced[old:] = reduced < -(objective.priority_weight // 2)
    return edf_safe(buckets.chain, bucket_of_pair, (rank, is_new), forced)[old:]


def most_negative_per_task(tasks: IntArray, reduced: IntArray, limit: int) -> IntArray:
    """Indices of each task's `limit` pairs of most negative reduced cost."""
    order = np.lexsort((reduced, tasks))
    sorted_tasks = tasks[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_tasks, sorted_tasks)
    return np.sort(order[rank < limit])


def pair_keys(arrays: Arrays, pair_tasks: IntArray, pair_annotators: IntArray) -> IntArray:
    """Sorted keys task x n_annotators + annotator identifying a set of pairs."""
    return np.sort(pair_tasks * arrays.n_annotators + pair_annotators)


def price_pairs(
    arrays: Arrays, buckets: Buckets, state: RoundState, existing: IntArray, *, include_zero: bool = False
) -> tuple[IntArray, IntArray, IntArray]:
    """Every eligible pair outside the network (`existing`: its sorted pair keys) with a negative reduced
    cost p[task] - p[bucket], with that reduced cost; with `include_zero`, also those of reduced cost 0.

    Pairs inside the network are skipped: a full one may have a negative reduced cost (complementary
    slackness allows it), and it is already there.
    """
    network = state.network
    task_potential = state.distance[network.task_node0 : network.bucket_node0]
    bucket_potential = state.bucket_potential()
    # A pair can only be negative if the task's potential is below its annotator's largest bucket potential:
    # a cheap dense test that leaves few cells for the exact bucket lookup.
    best_bucket = np.full(arrays.n_annotators, INT64_MIN, dtype=np.int64)
    np.maximum.at(best_bucket, buckets.chain.owner, bucket_potential)
    task_parts: list[IntArray] = []
    annotator_parts: list[IntArray] = []
    reduced_parts: list[IntArray] = []
    for block in iter_blocks(arrays):
        task_side = task_potential[block.tasks][:, None]
        best_side = best_bucket[block.annotators][None, :]
        below = task_side <= best_side if include_zero else task_side < best_side
        rows, cols = np.nonzero(block.eligible & below)
        if len(rows) == 0:
            continue
        tasks = block.tasks[rows]
        annotators = block.annotators[cols]
        reduced = task_potential[tasks] - bucket_potential[buckets.lookup(arrays, tasks, annotators)]
        wanted = reduced <= 0 if include_zero else reduced < 0
        keys = tasks * arrays.n_annotators + annotators
        if len(existing):
            position = np.minimum(np.searchsorted(existing, keys), len(existing) - 1)
            wanted &= existing[position] != keys
        task_parts.append(tasks[wanted])
        annotator_parts.append(annotators[wanted])
        reduced_parts.append(reduced[wanted])
    if not task_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return np.concatenate(task_parts), np.concatenate(annotator_parts), np.concatenate(reduced_parts)


def estimate_shadow_prices(arrays: Arrays, options: GuidedOptions) -> IntArray:
    """Shadow prices from a solve of a random sample of tasks against proportionally scaled capacities."""
    cells = arrays.block_cells()
    if cells <= options.sample_cells or arrays.n_tasks == 0:
        # Small enough that pricing rounds are cheap: start from prices alone.
        return np.zeros(arrays.n_annotators, dtype=np.int64)
    share = options.sample_cells / cells
    rng = np.random.default_rng(options.seed + 1)
    sample_tasks = np.flatnonzero(rng.random(arrays.n_tasks) < share)
    everyone = np.arange(arrays.n_annotators, dtype=np.int64)
    sample = subset_arrays(arrays, sample_tasks, everyone)
    # Stochastic rounding keeps the expected scaled capacity exact even for capacities of a few labels.
    scaled = np.floor(arrays.annotator_capacity * share + rng.random(arrays.n_annotators)).astype(np.int64)
    sample = replace(sample, annotator_capacity=scaled)
    buckets = build_buckets(sample)
    pair_tasks, pair_annotators, _ = select_pairs(
        sample, np.zeros(sample.n_annotators, dtype=np.int64), 2**30, rng
    )
    keep = edf_guess(sample, buckets, pair_tasks, pair_annotators, rng)
    state = solve_round(sample, buckets, exact_objective(sample), pair_tasks[keep], pair_annotators[keep])
    if isinstance(state, str):
        return np.zeros(arrays.n_annotators, dtype=np.int64)
    return annotator_shadow_prices(state.network, state.distance, state.chain.first, sample.annotator_price)
