"""Every marketplace model, imported in one place so that Alembic and the app see the whole metadata."""

from marketplace.accounts.models import ApiToken, Membership, Organisation, OrgRole, PlatformRole, User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus, Skill
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, Task, TaskStatus
from marketplace.planning.models import Offer, PlanRun
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker, ReviewState

__all__ = [
    "AnnotatorProfile",
    "AnnotatorSkill",
    "AnnotatorStatus",
    "ApiToken",
    "Assignment",
    "AssignmentState",
    "Label",
    "Membership",
    "Offer",
    "PlanRun",
    "ProjectWorker",
    "OrgRole",
    "Organisation",
    "PlatformRole",
    "Project",
    "ProjectStatus",
    "ReviewPolicy",
    "ReviewState",
    "Skill",
    "Task",
    "TaskStatus",
    "User",
]
