"""Labelforce routing engine: optimal assignment of annotators to label slots (pure, no I/O).

Plain data in (frozen dataclasses), a Result out. See `solve` for the methods and the objective.
"""

from routing.check import InvalidResultError, check_result, find_violations
from routing.generate import generate_instance
from routing.guided import GuidedOptions
from routing.instance import (
    Annotator,
    Instance,
    InstanceError,
    ProjectBudget,
    Task,
    instance_from_json,
    instance_to_json,
    validate_instance,
)
from routing.result import Assignment, Result
from routing.solve import METHODS, OBJECTIVES, SolveOptions, solve

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "Annotator",
    "Assignment",
    "GuidedOptions",
    "Instance",
    "InstanceError",
    "InvalidResultError",
    "ProjectBudget",
    "Result",
    "SolveOptions",
    "Task",
    "check_result",
    "find_violations",
    "generate_instance",
    "instance_from_json",
    "instance_to_json",
    "solve",
    "validate_instance",
]
