"""The guided method's pair filters: first-k selection, the EDF-safe rule and holding back binding pairs."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from routing import Instance
from routing.arrays import BucketChain, build_buckets, instance_arrays
from routing.flow import exact_objective, placeable
from routing.guided import edf_safe, first_true, hold_back_binding
from tests.routing.routing_factories import PROPERTY, annotator, task


@st.composite
def chains_and_pairs(draw: st.DrawFn) -> tuple[BucketChain, np.ndarray, np.ndarray]:
    """A bucket chain (ascending EDF limits per annotator) and pairs spread over its buckets."""
    values: list[int] = []
    owners: list[int] = []
    n_annotators = draw(st.integers(1, 4))
    for owner in range(n_annotators):
        limits = sorted(draw(st.sets(st.integers(1, 6), min_size=1, max_size=4)))
        values.extend(limits)
        owners.extend([owner] * len(limits))
    owner_array = np.asarray(owners, dtype=np.int64)
    chain = BucketChain(
        owner=owner_array,
        value=np.asarray(values, dtype=np.int64),
        first=np.searchsorted(owner_array, np.arange(n_annotators + 1)).astype(np.int64),
    )
    n_pairs = draw(st.integers(0, 30))
    buckets = np.asarray(draw(st.lists(st.integers(0, chain.count - 1), min_size=n_pairs, max_size=n_pairs)))
    forced = np.asarray(draw(st.lists(st.booleans(), min_size=n_pairs, max_size=n_pairs)), dtype=bool)
    return chain, buckets.astype(np.int64), forced


@PROPERTY
@given(chains_and_pairs())
def test_edf_safe_keeps_early_limits_from_binding(drawn: tuple[BucketChain, np.ndarray, np.ndarray]) -> None:
    chain, buckets, forced = drawn
    rank = np.arange(len(buckets))[::-1].copy()
    for forced_pairs in (np.zeros(len(buckets), dtype=bool), forced):
        keep = edf_safe(chain, buckets, (rank,), forced_pairs)
        assert keep[forced_pairs].all()
        assert keep[chain.is_last()[buckets]].all()
        if forced_pairs.any():
            continue
        # Without forced pairs, at most value[j] kept pairs lie in the buckets up to j of j's annotator.
        kept_per_bucket = np.bincount(buckets[keep], minlength=chain.count)
        for bucket in np.flatnonzero(~chain.is_last()).tolist():
            start = int(chain.first[chain.owner[bucket]])
            assert kept_per_bucket[start : bucket + 1].sum() <= chain.value[bucket]


@PROPERTY
@given(st.integers(1, 6), st.integers(0, 600), st.floats(0.0, 1.0), st.data())
def test_first_true_equals_a_running_count(
    n_rows: int, n_columns: int, density: float, data: st.DataObject
) -> None:
    # Wider than the leading window, sparse rows need the full-width fallback.
    seed = data.draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random((n_rows, n_columns)) < density
    count = np.asarray(data.draw(st.lists(st.integers(0, 300), min_size=n_rows, max_size=n_rows)))
    expected = (np.cumsum(mask, axis=1) <= count[:, None]) & mask
    assert np.array_equal(first_true(mask, count.astype(np.int64)) & mask, expected)


def test_hold_back_binding_waits_on_price_savings_that_would_bind_but_not_on_priority_gains() -> None:
    # One annotator, 1 label/h, capacity 5: a 1-hour task has EDF limit 1 (a bucket that is not the last).
    short = [task(f"s{i}", deadline_hours=1.0) for i in range(3)]
    instance = Instance(
        tasks=(*short, task("long", deadline_hours=24.0)),
        annotators=(annotator("a", capacity=5, labels_per_hour=1.0),),
    )
    arrays = placeable(instance_arrays(instance))
    buckets = build_buckets(arrays)
    objective = exact_objective(arrays)
    # s0 is already in the network, in the 1-hour bucket whose limit is a single label.
    network_buckets = buckets.lookup(arrays, np.array([0]), np.array([0]))
    new_tasks = np.array([1, 2, 3], dtype=np.int64)
    reduced = np.array([-5, -objective.priority_weight, -5], dtype=np.int64)
    keep = hold_back_binding(
        arrays, buckets, objective, network_buckets, new_tasks, np.zeros(3, dtype=np.int64), reduced
    )
    # s1 would make the 1-hour bucket bind for a price saving: held back. s2 gains priority: added.
    # The 24-hour task is in the annotator's last bucket, which cannot be made to bind early: added.
    assert keep.tolist() == [False, True, True]
