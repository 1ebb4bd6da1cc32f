"""Every marketplace model, imported in one place so that Alembic and the app see the whole metadata."""

from marketplace.accounts.models import ApiToken, Membership, Organisation, OrgRole, PlatformRole, User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus, Skill
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, Task, TaskStatus
from marketplace.work.models import Assignment, AssignmentState, Label, ReviewState

__all__ = [
    "AnnotatorProfile",
    "AnnotatorSkill",
    "AnnotatorStatus",
    "ApiToken",
    "Assignment",
    "AssignmentState",
    "Label",
    "Membership",
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
