"""Every marketplace model, imported in one place so that Alembic and the app see the whole metadata."""

from marketplace.accounts.models import ApiToken, Membership, Organisation, OrgRole, PlatformRole, User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus, Skill
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, Task, TaskStatus
from marketplace.planning.models import Offer, PlanRun
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker, ReviewState
from marketplace.quality.models import Appeal, ConsensusItem, ReviewEntry
from marketplace.throughput.models import ProjectHealth
from marketplace.events.models import Event, EventStream, WebhookDelivery, WebhookSecret

__all__ = [
    "AnnotatorProfile",
    "AnnotatorSkill",
    "AnnotatorStatus",
    "ApiToken",
    "Appeal",
    "Assignment",
    "AssignmentState",
    "ConsensusItem",
    "Event",
    "EventStream",
    "Label",
    "Membership",
    "Offer",
    "PlanRun",
    "ProjectHealth",
    "ProjectWorker",
    "OrgRole",
    "Organisation",
    "PlatformRole",
    "Project",
    "ProjectStatus",
    "ReviewEntry",
    "ReviewPolicy",
    "ReviewState",
    "Skill",
    "Task",
    "TaskStatus",
    "User",
    "WebhookDelivery",
    "WebhookSecret",
]
