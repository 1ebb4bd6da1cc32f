"""Every marketplace model, imported in one place so that Alembic and the app see the whole metadata."""

from marketplace.accounts.models import ApiToken, Membership, Organisation, OrgRole, PlatformRole, User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus, Skill
from marketplace.billing.models import Bonus
from marketplace.events.models import Event, EventStream, WebhookDelivery, WebhookSecret
from marketplace.planning.models import Offer, PlanRun
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, Task, TaskStatus
from marketplace.quality.models import Appeal, ConsensusItem, ReviewEntry
from marketplace.throughput.models import ProjectHealth
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker, ReviewState

__all__ = [
    "AnnotatorProfile",
    "AnnotatorSkill",
    "AnnotatorStatus",
    "ApiToken",
    "Appeal",
    "Assignment",
    "AssignmentState",
    "Bonus",
    "ConsensusItem",
    "Event",
    "EventStream",
    "Label",
    "Membership",
    "Offer",
    "OrgRole",
    "Organisation",
    "PlanRun",
    "PlatformRole",
    "Project",
    "ProjectHealth",
    "ProjectStatus",
    "ProjectWorker",
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
