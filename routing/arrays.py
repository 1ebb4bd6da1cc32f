"""Columnar NumPy form of an instance: eligibility by skill block, EDF limits and deadline buckets.

Nothing here loops in Python over task x annotator pairs: every pair computation is a broadcast over a
block (the tasks of one skill x the annotators having that skill), cut into row chunks to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from routing.instance import Instance, ProjectBudget

IntArray = NDArray[np.int64]
Int32Array = NDArray[np.int32]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Cells (tasks x annotators) per broadcast chunk: ~4M cells keeps every temporary under ~40 MB.
CHUNK_CELLS = 4_000_000
# A dense (annotator, limit) -> bucket table is used while it stays this small; beyond it, a sorted search.
DENSE_BUCKET_TABLE_MAX = 32_000_000


class EngineOverflow(Exception):
    """The instance's magnitudes do not fit the int64 arithmetic of the engine or of OR-Tools."""


@dataclass(frozen=True)
class Arrays:
    """An instance as parallel NumPy arrays; indices are local, `*_origin` maps them to the instance."""

    task_origin: IntArray
    task_skill: Int32Array
    task_min_level: IntArray
    task_need: IntArray
    task_deadline: FloatArray
    task_max_price: IntArray
    task_priority: IntArray
    task_project: Int32Array  # index into project_names, -1 when the task has no project
    annotator_origin: IntArray
    annotator_price: IntArray
    annotator_capacity: IntArray
    annotator_lph: FloatArray
    annotator_penalty: IntArray  # quality tie-breaker: 1000 x (1 - quality), unknown quality counts as 0
    skill_names: tuple[str, ...]
    skill_tasks: tuple[IntArray, ...]  # per skill: local task indices
    skill_annotators: tuple[IntArray, ...]  # per skill: local annotator indices having the skill
    skill_levels: tuple[IntArray, ...]  # per skill: those annotators' levels
    project_names: tuple[str, ...]
    project_max_slots: IntArray  # per project: slot limit, -1 when unlimited
    project_budget: IntArray  # per project: money limit in minor units, -1 when unlimited
    # pairs that may not be assigned (local indices), usually few: an annotator who already had the item
    excluded_task: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    excluded_annotator: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.task_need)

    @property
    def n_annotators(self) -> int:
        """Number of annotators."""
        return len(self.annotator_price)

    def block_cells(self) -> int:
        """Number of (task, annotator) cells sharing a skill: an upper bound on the eligible pairs."""
        return sum(len(t) * len(a) for t, a in zip(self.skill_tasks, self.skill_annotators, strict=True))

    def edf_cap(self) -> IntArray:
        """Per annotator, the most tasks it can ever take: min(capacity, total demand)."""
        total_need = int(self.task_need.sum())
        return np.minimum(self.annotator_capacity, total_need)


QUALITY_PENALTY_SCALE = 1000
# Every magnitude stays far below 2**63 so that sums of a few of them cannot wrap.
VALUE_LIMIT = 2**53


def _check_magnitudes(instance: Instance) -> None:
    largest = {
        "price": max((a.price for a in instance.annotators), default=0),
        "capacity": max((a.capacity for a in instance.annotators), default=0),
        "max_price": max((t.max_price for t in instance.tasks), default=0),
        "labels_needed": sum(t.labels_needed for t in instance.tasks),
        "priority": max((t.priority for t in instance.tasks), default=0),
        "level": max((max(a.skills.values(), default=0) for a in instance.annotators), default=0),
        "min_level": max((t.min_level for t in instance.tasks), default=0),
    }
    for name, value in largest.items():
        if value >= VALUE_LIMIT:
            raise EngineOverflow(f"{name} {value} is beyond the engine's exact integer range (2**53)")


def instance_arrays(instance: Instance, budgets: Mapping[str, ProjectBudget] | None = None) -> Arrays:
    """Convert a validated instance to arrays; raise EngineOverflow for magnitudes int64 cannot hold."""
    _check_magnitudes(instance)
    tasks = instance.tasks
    annotators = instance.annotators
    n_tasks = len(tasks)
    n_annotators = len(annotators)
    budgets = instance.project_budgets if budgets is None else budgets

    skill_names = tuple(sorted({t.skill for t in tasks}))
    skill_index = {name: i for i, name in enumerate(skill_names)}
    project_names = tuple(sorted({t.project for t in tasks if t.project is not None}))
    project_index = {name: i for i, name in enumerate(project_names)}

    task_skill = np.fromiter((skill_index[t.skill] for t in tasks), np.int32, n_tasks)
    task_project = np.fromiter(
        (-1 if t.project is None else project_index[t.project] for t in tasks), np.int32, n_tasks
    )
    skill_tasks = _group_by(task_skill, len(skill_names))

    members: list[list[int]] = [[] for _ in skill_names]
    levels: list[list[int]] = [[] for _ in skill_names]
    for a, annotator in enumerate(annotators):
        for skill, level in annotator.skills.items():
            s = skill_index.get(skill)
            if s is not None:
                members[s].append(a)
                levels[s].append(level)

    def _limit(project: str, attribute: str) -> int:
        entry = budgets.get(project)
        value = None if entry is None else getattr(entry, attribute)
        return -1 if value is None else int(value)

    annotator_index = {a.id: i for i, a in enumerate(annotators)}
    excluded = [
        (t, annotator_index[a]) for t, task in enumerate(tasks) for a in task.excluded if a in annotator_index
    ]
    excluded_pairs = np.asarray(excluded, dtype=np.int64).reshape(-1, 2)
    penalties = np.fromiter(
        (
            round(QUALITY_PENALTY_SCALE * (1.0 - (a.quality if a.quality is not None else 0.0)))
            for a in annotators
        ),
        np.int64,
        n_annotators,
    )
    return Arrays(
        task_origin=np.arange(n_tasks, dtype=np.int64),
        task_skill=task_skill,
        task_min_level=np.fromiter((t.min_level for t in tasks), np.int64, n_tasks),
        task_need=np.fromiter((t.labels_needed for t in tasks), np.int64, n_tasks),
        task_deadline=np.fromiter((t.deadline_hours for t in tasks), np.float64, n_tasks),
        task_max_price=np.fromiter((t.max_price for t in tasks), np.int64, n_tasks),
        task_priority=np.fromiter((t.priority for t in tasks), np.int64, n_tasks),
        task_project=task_project,
        annotator_origin=np.arange(n_annotators, dtype=np.int64),
        annotator_price=np.fromiter((a.price for a in annotators), np.int64, n_annotators),
        annotator_capacity=np.fromiter((a.capacity for a in annotators), np.int64, n_annotators),
        annotator_lph=np.fromiter((a.labels_per_hour for a in annotators), np.float64, n_annotators),
        annotator_penalty=penalties,
        skill_names=skill_names,
        skill_tasks=skill_tasks,
        skill_annotators=tuple(np.asarray(m, dtype=np.int64) for m in members),
        skill_levels=tuple(np.asarray(lv, dtype=np.int64) for lv in levels),
        project_names=project_names,
        project_max_slots=np.asarray([_limit(p, "max_slots") for p in project_names], dtype=np.int64),
        project_budget=np.asarray([_limit(p, "budget") for p in project_names], dtype=np.int64),
        excluded_task=excluded_pairs[:, 0].copy(),
        excluded_annotator=excluded_pairs[:, 1].copy(),
    )


def _group_by(keys: Int32Array, n_groups: int) -> tuple[IntArray, ...]:
    order = np.argsort(keys, kind="stable").astype(np.int64)
    bounds = np.searchsorted(keys[order], np.arange(n_groups + 1))
    return tuple(order[bounds[g] : bounds[g + 1]] for g in range(n_groups))


def subset_arrays(arrays: Arrays, task_index: IntArray, annotator_index: IntArray) -> Arrays:
    """Restrict to some tasks and annotators (sorted local indices), keeping origins and skills."""
    task_map = np.full(arrays.n_tasks, -1, dtype=np.int64)
    task_map[task_index] = np.arange(len(task_index))
    annotator_map = np.full(arrays.n_annotators, -1, dtype=np.int64)
    annotator_map[annotator_index] = np.arange(len(annotator_index))
    skill_tasks = []
    skill_annotators = []
    skill_levels = []
    for tasks, members, levels in zip(
        arrays.skill_tasks, arrays.skill_annotators, arrays.skill_levels, strict=True
    ):
        local_tasks = task_map[tasks]
        skill_tasks.append(local_tasks[local_tasks >= 0])
        local_members = annotator_map[members]
        keep = local_members >= 0
        skill_annotators.append(local_members[keep])
        skill_levels.append(levels[keep])
    excluded_tasks = task_map[arrays.excluded_task]
    excluded_annotators = annotator_map[arrays.excluded_annotator]
    kept = (excluded_tasks >= 0) & (excluded_annotators >= 0)
    return replace(
        arrays,
        task_origin=arrays.task_origin[task_index],
        task_skill=arrays.task_skill[task_index],
        task_min_level=arrays.task_min_level[task_index],
        task_need=arrays.task_need[task_index],
        task_deadline=arrays.task_deadline[task_index],
        task_max_price=arrays.task_max_price[task_index],
        task_priority=arrays.task_priority[task_index],
        task_project=arrays.task_project[task_index],
        annotator_origin=arrays.annotator_origin[annotator_index],
        annotator_price=arrays.annotator_price[annotator_index],
        annotator_capacity=arrays.annotator_capacity[annotator_index],
        annotator_lph=arrays.annotator_lph[annotator_index],
        annotator_penalty=arrays.annotator_penalty[annotator_index],
        skill_tasks=tuple(skill_tasks),
        skill_annotators=tuple(skill_annotators),
        skill_levels=tuple(skill_levels),
        excluded_task=excluded_tasks[kept],
        excluded_annotator=excluded_annotators[kept],
    )


def drop_excluded(arrays: Arrays, tasks: IntArray, annotators: IntArray, eligible: BoolArray) -> None:
    """Clear, in place, the cells of an eligibility block (rows `tasks` x columns `annotators`) that are excluded."""
    if arrays.excluded_task.size == 0:
        return
    row = np.full(arrays.n_tasks, -1, dtype=np.int64)
    row[tasks] = np.arange(len(tasks))
    column = np.full(arrays.n_annotators, -1, dtype=np.int64)
    column[annotators] = np.arange(len(annotators))
    rows = row[arrays.excluded_task]
    columns = column[arrays.excluded_annotator]
    inside = (rows >= 0) & (columns >= 0)
    eligible[rows[inside], columns[inside]] = False


@dataclass(frozen=True)
class Block:
    """A chunk of one skill's tasks x the annotators having that skill, with the eligibility mask."""

    tasks: IntArray  # rows: local task indices
    annotators: IntArray  # columns: local annotator indices
    eligible: BoolArray  # rows x columns


def iter_blocks(arrays: Arrays, chunk_cells: int = CHUNK_CELLS) -> Iterator[Block]:
    """Yield eligibility blocks covering every (task, annotator) cell that shares a skill."""
    for skill_tasks, skill_members, skill_levels in zip(
        arrays.skill_tasks, arrays.skill_annotators, arrays.skill_levels, strict=True
    ):
        usable = arrays.annotator_capacity[skill_members] >= 1
        members = skill_members[usable]
        levels = skill_levels[usable]
        tasks = skill_tasks[arrays.task_need[skill_tasks] >= 1]
        if len(tasks) == 0 or len(members) == 0:
            continue
        price = arrays.annotator_price[members]
        lph = arrays.annotator_lph[members]
        rows = max(1, chunk_cells // len(members))
        for start in range(0, len(tasks), rows):
            chunk = tasks[start : start + rows]
            eligible = levels[None, :] >= arrays.task_min_level[chunk][:, None]
            eligible &= price[None, :] <= arrays.task_max_price[chunk][:, None]
            # floor(lph x deadline) >= 1: at least one label fits before the deadline.
            eligible &= np.multiply.outer(arrays.task_deadline[chunk], lph) >= 1.0
            drop_excluded(arrays, chunk, members, eligible)
            yield Block(tasks=chunk, annotators=members, eligible=eligible)


def eligible_pairs(arrays: Arrays) -> tuple[IntArray, IntArray]:
    """All eligible (task, annotator) pairs as two index arrays, grouped by skill then task."""
    task_parts: list[IntArray] = []
    annotator_parts: list[IntArray] = []
    for block in iter_blocks(arrays):
        rows, cols = np.nonzero(block.eligible)
        task_parts.append(block.tasks[rows])
        annotator_parts.append(block.annotators[cols])
    if not task_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    return np.concatenate(task_parts), np.concatenate(annotator_parts)


def pair_limits(arrays: Arrays, tasks: IntArray, annotators: IntArray, cap: IntArray) -> IntArray:
    """Per pair, min(floor(lph x deadline), cap): the EDF limit, clipped where it cannot bind."""
    product = arrays.annotator_lph[annotators] * arrays.task_deadline[tasks]
    # cap <= 2**53, so it is exact in float64 and the minimum is taken before the integer cast.
    return np.minimum(np.floor(product), cap[annotators].astype(np.float64)).astype(np.int64)


@dataclass(frozen=True)
class BucketChain:
    """Each annotator's chain of deadline buckets, as flow nodes: bucket -> next bucket -> ... -> sink."""

    owner: IntArray  # bucket -> annotator
    value: IntArray  # bucket -> EDF limit (capacity of the arc leaving the bucket)
    first: IntArray  # annotator -> first bucket; buckets of a are first[a]:first[a + 1], values ascending

    @property
    def count(self) -> int:
        """Number of bucket nodes."""
        return len(self.owner)

    def is_last(self) -> BoolArray:
        """Per bucket, whether it is its annotator's last (the one that feeds the sink)."""
        last = np.ones(self.count, dtype=bool)
        last[:-1] = self.owner[1:] != self.owner[:-1]
        return last

    def merge_redundant(self, pair_buckets: IntArray) -> tuple[BucketChain, IntArray]:
        """Drop the EDF limits that the given pairs can never exceed; also map old -> new bucket.

        If an annotator's pairs in buckets up to j number at most value[j], the limit of bucket j cannot
        bind for any flow on those pairs, so bucket j is merged into the next one. Any flow on these pairs
        is then feasible for the full chain too, which is what lets a certificate computed on the merged
        chain (a relaxation) carry over to the original.
        """
        counts = np.bincount(pair_buckets, minlength=self.count)
        running = np.cumsum(counts)
        before_annotator = np.concatenate(([0], running))[self.first[self.owner]]
        keep = self.is_last() | (running - before_annotator > self.value)
        # Each bucket maps to the first kept bucket at or after it (the annotator's last one is kept).
        kept_at_or_after = np.minimum.accumulate(np.where(keep, np.arange(self.count), self.count)[::-1])[
            ::-1
        ]
        new_index = np.cumsum(keep) - 1
        mapping = new_index[kept_at_or_after].astype(np.int64)
        owner = self.owner[keep]
        chain = BucketChain(
            owner=owner,
            value=self.value[keep],
            first=np.searchsorted(owner, np.arange(len(self.first))).astype(np.int64),
        )
        return chain, mapping


@dataclass(frozen=True)
class Buckets:
    """Deadline buckets of every annotator: one node per distinct EDF limit among its possible tasks.

    Two tasks whose EDF limits for an annotator are equal share a bucket: the nested constraint of the
    earlier deadline is implied by the later one, so grouping by limit value is exact (and tighter than
    grouping by deadline). Limits are clipped at the capacity, above which they cannot bind.
    """

    chain: BucketChain
    cap: IntArray  # annotator -> limits are clipped at this value
    table: Int32Array | None  # dense (offset[a] + limit) -> bucket, when small enough
    offset: IntArray | None
    keys: IntArray | None  # sorted owner * span + value, the fallback lookup
    span: int

    def lookup(self, arrays: Arrays, tasks: IntArray, annotators: IntArray) -> IntArray:
        """The bucket of each (task, annotator) pair."""
        limits = pair_limits(arrays, tasks, annotators, self.cap)
        if self.table is not None and self.offset is not None:
            found: IntArray = self.table[self.offset[annotators] + limits].astype(np.int64)
            return found
        assert self.keys is not None
        searched: IntArray = np.searchsorted(self.keys, annotators * self.span + limits).astype(np.int64)
        return searched


def build_buckets(arrays: Arrays) -> Buckets:
    """Create the deadline buckets from each skill's distinct deadlines (no pair enumeration needed)."""
    cap = arrays.edf_cap()
    span = int(cap.max(initial=0)) + 1
    if arrays.n_annotators * span >= 2**62:
        raise EngineOverflow("capacities x annotators exceed the int64 range of the deadline-bucket keys")
    key_parts: list[IntArray] = []
    for tasks, members in zip(arrays.skill_tasks, arrays.skill_annotators, strict=True):
        if len(tasks) == 0 or len(members) == 0:
            continue
        deadlines = np.unique(arrays.task_deadline[tasks])
        rows = max(1, CHUNK_CELLS // len(deadlines))
        for start in range(0, len(members), rows):
            chunk = members[start : start + rows]
            product = np.multiply.outer(arrays.annotator_lph[chunk], deadlines)
            limits = np.minimum(np.floor(product), cap[chunk].astype(np.float64)[:, None]).astype(np.int64)
            keys = chunk[:, None] * span + limits
            # A limit below 1 means no label fits: such pairs are never eligible, so they need no bucket.
            key_parts.append(np.unique(keys[limits >= 1]))
    keys = np.unique(np.concatenate(key_parts)) if key_parts else np.zeros(0, dtype=np.int64)
    owner = keys // span
    value = keys % span
    first = np.searchsorted(owner, np.arange(arrays.n_annotators + 1)).astype(np.int64)
    table: Int32Array | None = None
    offset: IntArray | None = None
    widths = cap + 1
    if int(widths.sum()) <= DENSE_BUCKET_TABLE_MAX:
        offset = np.concatenate(([0], np.cumsum(widths)[:-1])).astype(np.int64)
        table = np.full(int(widths.sum()), -1, dtype=np.int32)
        table[offset[owner] + value] = np.arange(len(keys), dtype=np.int32)
    return Buckets(
        chain=BucketChain(owner=owner, value=value, first=first),
        cap=cap,
        table=table,
        offset=offset,
        keys=None if table is not None else keys,
        span=span,
    )
