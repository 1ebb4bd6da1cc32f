"""Seeded synthetic instances with the skew of a real labeling marketplace.

- Skills have Zipf-like popularity and come in pools (families of related skills, e.g. languages of one
  region): an annotator holds 1-3 skills of one pool, so pools are independent components.
- Tasks come in projects sharing a skill, a minimum level (1-5), a price cap and a base deadline
  (log-normal, in half hours); most tasks need 1 label, some 2-3; priority is mostly 1, some 2-3.
- An annotator's price rises with their best level, plus log-normal noise; capacities 5-50 labels;
  speeds log-normal around 6 labels per hour. Price caps are set so that most annotators of a skill
  qualify for most of its tasks: the eligible pairs grow with tasks x annotators.
"""

from __future__ import annotations

import numpy as np

from routing.instance import Annotator, Instance, Task

POOL_SIZE = 4
LEVEL_WEIGHTS_TASK = (0.35, 0.3, 0.2, 0.1, 0.05)
LEVEL_WEIGHTS_ANNOTATOR = (0.1, 0.2, 0.3, 0.25, 0.15)
PRIORITY_WEIGHTS = (0.82, 0.13, 0.05)
NEED_WEIGHTS = (0.5, 0.3, 0.2)


def default_skill_count(n_tasks: int) -> int:
    """More skills for larger markets: 10 for 1k tasks, 32 for 100k."""
    return int(min(32, max(4, round(10 * (max(n_tasks, 1) / 1000) ** (1 / 4)))))


def level_price(level: np.ndarray) -> np.ndarray:
    """Typical price in cents of a label by an annotator whose best level is `level`."""
    return 300.0 + 140.0 * level


def generate_instance(
    n_tasks: int, n_annotators: int, n_skills: int | None = None, seed: int = 0
) -> Instance:
    """Build a reproducible synthetic instance; the same arguments always give the same instance."""
    rng = np.random.default_rng(seed)
    skills = n_skills if n_skills is not None else default_skill_count(n_tasks)
    skills = max(1, skills)
    skill_names = [f"skill-{s:02d}" for s in range(skills)]
    popularity = 1.0 / np.arange(1, skills + 1) ** 0.9
    popularity /= popularity.sum()
    rng.shuffle(popularity)
    pools = [list(range(start, min(start + POOL_SIZE, skills))) for start in range(0, skills, POOL_SIZE)]

    n_projects = max(1, n_tasks // 250)
    project_skill = rng.choice(skills, size=n_projects, p=popularity)
    project_level = rng.choice(5, size=n_projects, p=LEVEL_WEIGHTS_TASK) + 1
    project_deadline = np.exp(rng.normal(np.log(24.0), 1.1, size=n_projects))
    # Caps between the typical price of a level-3 and of a level-5 annotator: most qualify, the priciest
    # experts often do not.
    project_cap = np.round(level_price(np.full(n_projects, 3.0)) * rng.uniform(1.0, 1.7, size=n_projects))
    project_priority = rng.choice(3, size=n_projects, p=PRIORITY_WEIGHTS) + 1
    project_share = rng.lognormal(0.0, 0.8, size=n_projects)
    project_share /= project_share.sum()

    task_project = rng.choice(n_projects, size=n_tasks, p=project_share)
    task_deadline = np.maximum(
        0.5, np.round(2.0 * project_deadline[task_project] * rng.uniform(0.7, 1.3, size=n_tasks)) / 2.0
    )
    task_need = rng.choice(3, size=n_tasks, p=NEED_WEIGHTS) + 1
    tasks = tuple(
        Task(
            id=f"t{i}",
            skill=skill_names[int(project_skill[p])],
            min_level=int(project_level[p]),
            labels_needed=int(task_need[i]),
            deadline_hours=float(task_deadline[i]),
            max_price=int(project_cap[p]),
            priority=int(project_priority[p]),
            project=f"p{p}",
        )
        for i, p in enumerate(task_project.tolist())
    )

    pool_weight = np.array([popularity[pool].sum() for pool in pools]) ** 0.8
    pool_weight /= pool_weight.sum()
    annotator_pool = rng.choice(len(pools), size=n_annotators, p=pool_weight)
    skill_count = rng.choice(3, size=n_annotators, p=(0.4, 0.4, 0.2)) + 1
    levels = rng.choice(5, size=(n_annotators, 3), p=LEVEL_WEIGHTS_ANNOTATOR) + 1
    best_level = levels.max(axis=1).astype(np.float64)
    price = np.round(level_price(best_level) * rng.lognormal(0.0, 0.2, size=n_annotators))
    capacity = rng.integers(5, 51, size=n_annotators)
    speed = np.clip(np.round(rng.lognormal(np.log(6.0), 0.6, size=n_annotators), 1), 0.5, 60.0)
    quality = np.round(rng.uniform(0.6, 1.0, size=n_annotators), 2)

    annotators = []
    for a in range(n_annotators):
        pool = pools[int(annotator_pool[a])]
        weights = popularity[pool] / popularity[pool].sum()
        count = min(int(skill_count[a]), len(pool))
        chosen = rng.choice(pool, size=count, replace=False, p=weights)
        annotators.append(
            Annotator(
                id=f"a{a}",
                skills={skill_names[int(s)]: int(levels[a, k]) for k, s in enumerate(chosen)},
                price=int(price[a]),
                capacity=int(capacity[a]),
                labels_per_hour=float(speed[a]),
                quality=float(quality[a]),
            )
        )
    return Instance(tasks=tasks, annotators=tuple(annotators))
