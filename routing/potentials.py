"""Node potentials (the dual) of an optimal flow, derived from its residual graph, and their check.

OR-Tools' Python SimpleMinCostFlow returns flows but not potentials, so they are rebuilt here. A flow is
optimal exactly when its residual graph has no negative cycle; then shortest-path distances exist, and
p = -(distance to the sink) satisfies cost + p[tail] - p[head] >= 0 on every residual arc: every residual
arc has a non-negative reduced cost, so p is an optimal dual.

The distances are computed on costs shifted by a node potential `shift` (network.shift: -M x priority on
task nodes, -price on bucket nodes) that makes every task <-> bucket arc cost exactly 0. Only the arcs
touching the source, the sink and project nodes keep a non-zero cost, so label-correcting converges in
about as many passes as the hop depth of the residual graph (a few dozen), each pass a NumPy gather over
the arcs whose tail improved. In shifted terms the reduced cost of any pair arc (task t, bucket b),
whether or not it is in the network, is simply d[t] - d[b].

Nothing in the certificate trusts this computation: `check_potentials` verifies the reduced cost of every
residual arc, and pricing then covers every eligible pair that is not in the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routing.arrays import IntArray
from routing.flow import SINK, SOURCE, Network


@dataclass(frozen=True)
class Residual:
    """Residual arcs (tail, head, shifted cost) of a network under a flow."""

    tails: IntArray
    heads: IntArray
    costs: IntArray


def residual_arcs(network: Network, flows: IntArray) -> Residual:
    """The residual graph, including the zero-cost source -> sink overflow arc when it is implied."""
    shifted = network.costs + network.shift[network.heads] - network.shift[network.tails]
    forward = flows < network.capacities
    backward = flows > 0
    tails = [network.tails[forward].astype(np.int64), network.heads[backward].astype(np.int64)]
    heads = [network.heads[forward].astype(np.int64), network.tails[backward].astype(np.int64)]
    costs = [shifted[forward], -shifted[backward]]
    # The overflow arc source -> sink (capacity = supply, cost 0) carries the slots left unplaced.
    placed = int(flows[(network.tails == SOURCE) & (network.heads != SINK)].sum())
    unplaced = network.supply - placed
    if not network.explicit_overflow and placed > 0:
        tails.append(np.array([SOURCE]))
        heads.append(np.array([SINK]))
        costs.append(np.zeros(1, dtype=np.int64))
    if not network.explicit_overflow and unplaced > 0:
        tails.append(np.array([SINK]))
        heads.append(np.array([SOURCE]))
        costs.append(np.zeros(1, dtype=np.int64))
    return Residual(tails=np.concatenate(tails), heads=np.concatenate(heads), costs=np.concatenate(costs))


class NegativeCycleError(RuntimeError):
    """The residual graph has a negative cycle: the flow was not optimal (an engine bug)."""


def _label_correct(
    n_nodes: int,
    sources: IntArray,
    targets: IntArray,
    costs: IntArray,
    labels: IntArray,
    infinity: int | None = None,
) -> tuple[IntArray, int]:
    """labels[target] = min(labels[target], labels[source] + cost) over the arcs until nothing changes.

    NumPy passes over the arcs leaving the nodes that improved (all of them at first); raises
    NegativeCycleError if the labels keep improving for more passes than there are nodes. Labels at or
    above `infinity` mean "no path yet" and do not propagate.
    """
    order = np.argsort(sources, kind="stable")
    sources = sources[order]
    targets = targets[order]
    costs = costs[order]
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(sources, minlength=n_nodes), out=indptr[1:])
    frontier = np.flatnonzero(np.diff(indptr) > 0)
    passes = 0
    while len(frontier):
        passes += 1
        if passes > n_nodes + 1:
            raise NegativeCycleError("label-correcting did not converge: negative residual cycle")
        starts = indptr[frontier]
        lengths = indptr[frontier + 1] - starts
        total = int(lengths.sum())
        # Arc positions of every frontier node, concatenated: starts repeated plus a running offset.
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        tail_labels = labels[sources[positions]]
        candidate = tail_labels + costs[positions]
        reached = targets[positions]
        better = candidate < labels[reached]
        if infinity is not None:
            better &= tail_labels < infinity
        if not better.any():
            break
        reached = reached[better]
        np.minimum.at(labels, reached, candidate[better])
        frontier = np.unique(reached)
    return labels, passes


def sink_distance_potentials(n_nodes: int, residual: Residual) -> tuple[IntArray, int]:
    """Potentials p = -dist(v -> sink) over the residual arcs; also the number of label passes.

    dist(v) is the cheapest way to push one more unit from v to the sink: 0 for an annotator with room,
    the cheapest reassignment or displacement for a full one. These are the informative "shadow prices"
    (a virtual-root distance would be valid too, but it is flat: almost every pair would price at 0).

    A node that cannot reach the sink (an unplaced task whose annotators are all full) has no distance.
    It gets the largest potential the arcs into it allow, propagated from the nodes that can: for such a
    task, p(source) - M x priority, its value if it were placed. (Any larger bound, such as a big
    constant, would also be valid but would make every pair of that task look hugely profitable.)
    """
    span = int(np.abs(residual.costs).max(initial=0)) + 1
    unreachable = min(span * (n_nodes + 1), 2**60)
    distance = np.full(n_nodes, unreachable, dtype=np.int64)
    distance[SINK] = 0
    # dist(tail) <- cost + dist(head): label-correcting on the reversed arcs.
    distance, backward = _label_correct(
        n_nodes, residual.heads, residual.tails, residual.costs, distance, infinity=unreachable
    )
    stranded = distance >= unreachable
    potentials = -distance
    if not stranded.any():
        return potentials, backward
    potentials[stranded] = min(int(potentials[~stranded].max(initial=0)) + unreachable, 2**61)
    potentials, forward = _label_correct(n_nodes, residual.tails, residual.heads, residual.costs, potentials)
    return potentials, backward + forward


def check_potentials(residual: Residual, distance: IntArray) -> int:
    """Number of residual arcs whose reduced cost is negative (0 for valid optimal potentials)."""
    reduced = residual.costs + distance[residual.tails] - distance[residual.heads]
    return int(np.count_nonzero(reduced < 0))


def optimal_potentials(network: Network, flows: IntArray) -> tuple[IntArray, int]:
    """Verified optimal potentials (shifted) of a flow; raise NegativeCycleError if there are none."""
    residual = residual_arcs(network, flows)
    distance, passes = sink_distance_potentials(network.n_nodes, residual)
    bad = check_potentials(residual, distance)
    if bad:
        raise NegativeCycleError(f"{bad} residual arcs keep a negative reduced cost")
    return distance, passes


def annotator_shadow_prices(
    network: Network, distance: IntArray, bucket_first: IntArray, price: IntArray
) -> IntArray:
    """Per annotator, the shadow price of its capacity: p(sink) - p(its last bucket), at least 0."""
    n_annotators = len(bucket_first) - 1
    shadow = np.zeros(n_annotators, dtype=np.int64)
    has_bucket = bucket_first[1:] > bucket_first[:-1]
    last = network.bucket_node0 + bucket_first[1:][has_bucket] - 1
    # Unshift: p = d - shift, and shift(bucket) = -price.
    shadow[has_bucket] = distance[SINK] - (distance[last] + price[has_bucket])
    return np.maximum(shadow, 0)
