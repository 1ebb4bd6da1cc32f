"""Independent skill pools: tasks only reach annotators holding their skill, so pools solve separately."""

from __future__ import annotations

import numpy as np

from routing.arrays import Arrays, IntArray, subset_arrays


def _find(parent: list[int], item: int) -> int:
    while parent[item] != item:
        parent[item] = parent[parent[item]]
        item = parent[item]
    return item


def skill_components(arrays: Arrays) -> list[tuple[IntArray, IntArray]]:
    """Partition into (tasks, annotators) groups that share no annotator and no slot-limited project.

    Skills are joined when one annotator holds both, or when one project with a slot or money limit has
    tasks of both (the limit couples them). Annotators holding none of the tasks' skills are left out.
    """
    n_skills = len(arrays.skill_names)
    parent = list(range(n_skills))

    def join(first: int, second: int) -> None:
        root_first, root_second = _find(parent, first), _find(parent, second)
        if root_first != root_second:
            parent[root_second] = root_first

    skill_of_annotator = np.full(arrays.n_annotators, -1, dtype=np.int64)
    for skill, members in enumerate(arrays.skill_annotators):
        for annotator in members[skill_of_annotator[members] >= 0].tolist():
            join(int(skill_of_annotator[annotator]), skill)
        skill_of_annotator[members] = np.where(
            skill_of_annotator[members] >= 0, skill_of_annotator[members], skill
        )
    limited = (arrays.project_max_slots >= 0) | (arrays.project_budget >= 0)
    for project in np.flatnonzero(limited).tolist():
        skills = np.unique(arrays.task_skill[arrays.task_project == project]).tolist()
        for skill in skills[1:]:
            join(skills[0], skill)

    roots = np.array([_find(parent, s) for s in range(n_skills)], dtype=np.int64)
    groups: list[tuple[IntArray, IntArray]] = []
    for root in np.unique(roots).tolist():
        skills = np.flatnonzero(roots == root)
        tasks = np.sort(np.concatenate([arrays.skill_tasks[s] for s in skills.tolist()]))
        held = skill_of_annotator >= 0
        annotators = np.flatnonzero(held & (roots[np.maximum(skill_of_annotator, 0)] == root))
        groups.append((tasks.astype(np.int64), annotators.astype(np.int64)))
    return groups


def split_components(arrays: Arrays) -> list[Arrays]:
    """The arrays of each independent pool, largest (in task x annotator cells) first."""
    parts = [subset_arrays(arrays, tasks, annotators) for tasks, annotators in skill_components(arrays)]
    return sorted(parts, key=lambda part: part.block_cells(), reverse=True)
