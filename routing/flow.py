"""The exact min-cost-flow model: objective scale, network arrays and the OR-Tools solve.

Network (node numbering): source 0, sink 1, one node per slot-limited project, one per task, one per
deadline bucket. Arcs, all added in one vectorised call:

- task -> bucket of (annotator, EDF limit): capacity 1, cost price - M x priority (the pair arcs, first);
- source (or project node) -> task: capacity labels_needed;  source -> project node: capacity max_slots;
- bucket -> next bucket of the same annotator, last bucket -> sink: capacity = the bucket's EDF limit, so
  that the flow leaving a bucket counts the annotator's tasks with that limit or a smaller one;
- source -> sink, cost 0: slots that are not worth placing (or cannot be placed).

Minimising sum(price - M x priority) with M above the largest possible total price maximises the placed
priority first and minimises the price second: one unit of priority is worth more than any price change.

Without slot-limited projects the overflow arc is left out and OR-Tools' `solve_max_flow_with_min_cost`
is used (about 1.5x faster here; the arc stays in the residual graph of the certificate, see
routing.potentials). That is exact because the sets of slots that can be placed together are then the
independent sets of a matroid (a gammoid: every capacity lies downstream of the tasks), where every
maximum-weight independent set with positive weights is a basis, i.e. a maximum flow. Slots of
priority-0 tasks add no priority and cannot lower the price, so the engine never places them (their
demand is set to 0 first). A project's slot limit sits upstream of its tasks and breaks the matroid (one
priority-2 slot can beat two priority-1 slots that would need the project's last slot and a shared
annotator), so networks with slot-limited projects keep the overflow arc and use the plain `solve`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from ortools.graph.python import min_cost_flow

from routing.arrays import Arrays, BucketChain, EngineOverflow, Int32Array, IntArray

INT64_MAX = 2**63 - 1
SOURCE = 0
SINK = 1


@dataclass(frozen=True)
class Objective:
    """Pair cost = price - priority_weight x priority; `volume` caps the number of placed slots."""

    priority_weight: int
    # None: every slot may be placed; an int: at most this many (with unit priorities: the cheapest way to
    # place that many slots, used to price greedy's volume).
    volume: int | None = None


def priority_weight(arrays: Arrays) -> int:
    """M = 1 + an upper bound on the total price of any feasible assignment."""
    cap = arrays.edf_cap()
    by_annotators = sum(p * c for p, c in zip(arrays.annotator_price.tolist(), cap.tolist(), strict=True))
    top_price = int(arrays.annotator_price.max(initial=0))
    by_tasks = sum(
        n * min(p, top_price)
        for n, p in zip(arrays.task_need.tolist(), arrays.task_max_price.tolist(), strict=True)
    )
    return int(min(by_annotators, by_tasks)) + 1


def exact_objective(arrays: Arrays, volume: int | None = None, weight: int | None = None) -> Objective:
    """The lexicographic objective: priority first, then price (at most `volume` slots when given).

    `weight` overrides M, so that the pools of one instance share a unit (any M above the bound is exact).
    """
    return Objective(priority_weight=priority_weight(arrays) if weight is None else weight, volume=volume)


def placeable(arrays: Arrays) -> Arrays:
    """The arrays with priority-0 tasks' demand removed: the optimum never places them."""
    return replace(arrays, task_need=np.where(arrays.task_priority > 0, arrays.task_need, 0))


@dataclass(frozen=True)
class Network:
    """A min-cost-flow network as arc arrays; the first `n_pairs` arcs are the (task, bucket) pair arcs."""

    n_nodes: int
    tails: Int32Array
    heads: Int32Array
    capacities: IntArray
    costs: IntArray
    n_pairs: int
    supply: int  # slots offered at the source; those not placed take the overflow arc
    # True: the overflow arc is the network's last arc; False: it is implied (max-flow solve).
    explicit_overflow: bool
    task_node0: int
    bucket_node0: int
    # Per node, a shift that makes every task <-> bucket arc cost 0 (see routing.potentials).
    shift: IntArray


def check_cost_range(max_abs_cost: int, n_nodes: int, supply: int) -> None:
    """Raise EngineOverflow unless OR-Tools can scale the costs and sum the total in int64."""
    # SimpleMinCostFlow adds 2 nodes and multiplies every cost by (nodes + 1) inside its cost-scaling
    # algorithm, refusing costs above INT64_MAX / (2 x factor); the total cost must fit as well.
    factor = n_nodes + 3
    limit = INT64_MAX // (2 * factor)
    if max_abs_cost > limit:
        raise EngineOverflow(
            f"largest unit cost {max_abs_cost} exceeds {limit}, the int64 limit of OR-Tools' cost scaling "
            f"for {n_nodes} nodes (prices x priorities too large)"
        )
    if max_abs_cost * max(supply, 1) > INT64_MAX:
        raise EngineOverflow(f"total cost bound {max_abs_cost} x {supply} slots exceeds int64")


def pair_costs(arrays: Arrays, objective: Objective, tasks: IntArray, annotators: IntArray) -> IntArray:
    """Unit cost of each pair arc."""
    return arrays.annotator_price[annotators] - objective.priority_weight * arrays.task_priority[tasks]


def build_network(
    arrays: Arrays,
    buckets: BucketChain,
    objective: Objective,
    pair_tasks: IntArray,
    pair_annotators: IntArray,
    pair_buckets: IntArray,
) -> Network:
    """Lay out nodes and arcs for the given pairs (the other arcs always cover every task and bucket)."""
    n_tasks = arrays.n_tasks
    slot_projects = np.flatnonzero(arrays.project_max_slots >= 0)
    project_node = np.full(len(arrays.project_names), -1, dtype=np.int64)
    project_node[slot_projects] = 2 + np.arange(len(slot_projects))
    task_node0 = 2 + len(slot_projects)
    bucket_node0 = task_node0 + n_tasks
    n_nodes = bucket_node0 + buckets.count

    demand_tasks = np.flatnonzero(arrays.task_need >= 1)
    feeder = np.full(n_tasks, SOURCE, dtype=np.int64)
    has_project = arrays.task_project >= 0
    feeder[has_project] = np.maximum(project_node[arrays.task_project[has_project]], SOURCE)
    total_need = int(arrays.task_need[demand_tasks].sum())
    supply = total_need if objective.volume is None else min(objective.volume, total_need)

    next_same = np.zeros(buckets.count, dtype=bool)
    if buckets.count:
        next_same[:-1] = buckets.owner[1:] == buckets.owner[:-1]
    bucket_ids = np.arange(buckets.count, dtype=np.int64)
    chain_heads = np.where(next_same, bucket_node0 + bucket_ids + 1, SINK)

    # Some demand passes through a slot-limited project node: the matroid argument does not hold.
    explicit_overflow = bool(np.any(feeder[demand_tasks] != SOURCE))
    overflow = [1] if explicit_overflow else []
    tails = np.concatenate(
        [
            task_node0 + pair_tasks,
            feeder[demand_tasks],
            np.full(len(slot_projects), SOURCE, dtype=np.int64),
            bucket_node0 + bucket_ids,
            np.full(len(overflow), SOURCE, dtype=np.int64),
        ]
    )
    heads = np.concatenate(
        [
            bucket_node0 + pair_buckets,
            task_node0 + demand_tasks,
            2 + np.arange(len(slot_projects), dtype=np.int64),
            chain_heads,
            np.full(len(overflow), SINK, dtype=np.int64),
        ]
    )
    capacities = np.concatenate(
        [
            np.ones(len(pair_tasks), dtype=np.int64),
            arrays.task_need[demand_tasks],
            arrays.project_max_slots[slot_projects],
            buckets.value,
            np.full(len(overflow), supply, dtype=np.int64),
        ]
    )
    pair_cost = pair_costs(arrays, objective, pair_tasks, pair_annotators)
    costs = np.concatenate([pair_cost, np.zeros(len(tails) - len(pair_tasks), dtype=np.int64)])

    largest_price = int(arrays.annotator_price.max(initial=0))
    largest_priority = int(arrays.task_priority.max(initial=0)) * objective.priority_weight
    check_cost_range(largest_price + largest_priority, n_nodes, supply)

    shift = np.zeros(n_nodes, dtype=np.int64)
    shift[task_node0:bucket_node0] = -objective.priority_weight * arrays.task_priority
    shift[bucket_node0:] = -arrays.annotator_price[buckets.owner]
    return Network(
        n_nodes=n_nodes,
        tails=tails.astype(np.int32),
        heads=heads.astype(np.int32),
        capacities=capacities,
        costs=costs,
        n_pairs=len(pair_tasks),
        supply=supply,
        explicit_overflow=explicit_overflow,
        task_node0=task_node0,
        bucket_node0=bucket_node0,
        shift=shift,
    )


@dataclass(frozen=True)
class FlowOutcome:
    """The OR-Tools answer: a status word and the flow on every arc (empty unless optimal)."""

    status: str
    flows: IntArray
    message: str = ""


def solve_network(network: Network) -> FlowOutcome:
    """Solve the network with OR-Tools' SimpleMinCostFlow and map its status."""
    solver = min_cost_flow.SimpleMinCostFlow()
    if len(network.tails) == 0 or network.supply == 0:
        return FlowOutcome(status="optimal", flows=np.zeros(len(network.tails), dtype=np.int64))
    solver.add_arcs_with_capacity_and_unit_cost(
        network.tails, network.heads, network.capacities, network.costs
    )
    solver.set_nodes_supplies(
        np.array([SOURCE, SINK], dtype=np.int32), np.array([network.supply, -network.supply], dtype=np.int64)
    )
    status = solver.solve() if network.explicit_overflow else solver.solve_max_flow_with_min_cost()
    if status == solver.OPTIMAL:
        flows = np.asarray(solver.flows(np.arange(len(network.tails), dtype=np.int32)), dtype=np.int64)
        return FlowOutcome(status="optimal", flows=flows)
    empty = np.zeros(0, dtype=np.int64)
    if status in (solver.BAD_COST_RANGE, solver.BAD_CAPACITY_RANGE):
        return FlowOutcome(status="overflow", flows=empty, message=f"OR-Tools min-cost flow: {status.name}")
    # UNBALANCED, BAD_RESULT and NOT_SOLVED cannot follow from a network built here: it is a bug.
    raise RuntimeError(f"OR-Tools min-cost flow returned {status.name}")
