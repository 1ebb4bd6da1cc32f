"""Skills and annotator profiles. Services flush; the caller commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus, Skill
from marketplace.db import utcnow
from marketplace.errors import Conflict, InvalidInput
from marketplace.work.models import Label, ReviewState


def create_skill(session: Session, *, name: str, description: str = "") -> Skill:
    """A new skill; names are unique."""
    name = name.strip()
    if not name:
        raise InvalidInput("A skill needs a name.", details={"name": "blank"})
    if session.scalar(select(Skill.id).where(Skill.name == name)) is not None:
        raise Conflict(f"Skill {name!r} exists.", code="skill_exists")
    skill = Skill(name=name, description=description)
    session.add(skill)
    session.flush()  # generate skill.id
    return skill


def skills_by_name(session: Session, names: Iterable[str]) -> dict[str, Skill]:
    """The named skills; an unknown name is a 422 naming it."""
    wanted = set(names)
    found = {s.name: s for s in session.scalars(select(Skill).where(Skill.name.in_(wanted)))}
    missing = sorted(wanted - set(found))
    if missing:
        raise InvalidInput(f"Unknown skill(s): {', '.join(missing)}.", details={"skills": missing})
    return found


def set_skill_levels(session: Session, *, profile: AnnotatorProfile, levels: Mapping[str, int]) -> None:
    """Set the profile's skills to exactly `levels` (skill name → 1..5), keeping each kept skill's track record."""
    skills = skills_by_name(session, levels)
    current = {s.skill_id: s for s in profile.skills}
    wanted_ids = {skills[name].id for name in levels}
    for skill_id, row in list(current.items()):
        if skill_id not in wanted_ids:
            profile.skills.remove(row)
    for name, level in levels.items():
        skill_id = skills[name].id
        if skill_id in current:
            current[skill_id].level = level
        else:
            profile.skills.append(AnnotatorSkill(skill_id=skill_id, level=level))


def create_profile(
    session: Session,
    *,
    user: User,
    display_name: str,
    price_minor: int,
    currency: str,
    capacity: int,
    labels_per_hour: float,
    skills: Mapping[str, int],
) -> AnnotatorProfile:
    """Make `user` an annotator in the marketplace."""
    if session.scalar(select(AnnotatorProfile.id).where(AnnotatorProfile.user_id == user.id)) is not None:
        raise Conflict("You already have an annotator profile.", code="already_annotator")
    profile = AnnotatorProfile(
        user_id=user.id,
        display_name=display_name,
        price_minor=price_minor,
        currency=currency,
        capacity=capacity,
        labels_per_hour=labels_per_hour,
        status=AnnotatorStatus.ACTIVE.value,
        last_seen_at=utcnow(),
    )
    session.add(profile)
    set_skill_levels(session, profile=profile, levels=skills)
    session.flush()  # generate profile.id
    return profile


def skill_levels(profile: AnnotatorProfile) -> dict[str, int]:
    """The profile's skills as name → level."""
    return {row.skill.name: row.level for row in profile.skills}


@dataclass(frozen=True)
class LabelCounts:
    """An annotator's labels by decision, and the time spent on them."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    pending: int = 0
    active_seconds: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None


def label_counts(session: Session, *, annotator_id: int) -> LabelCounts:
    """Counted from the labels themselves: a decision about one annotator's label never writes another
    annotator's row, which is what kept concurrent consensus decisions from deadlocking on profile counters."""
    rows = session.execute(
        select(Label.review_state, func.count(), func.coalesce(func.sum(Label.time_spent_ms), 0))
        .where(Label.annotator_id == annotator_id)
        .group_by(Label.review_state)
    ).tuples()
    by_state = {state: (int(n), int(ms)) for state, n, ms in rows}
    return LabelCounts(
        submitted=sum(n for n, _ in by_state.values()),
        accepted=by_state.get(ReviewState.ACCEPTED.value, (0, 0))[0],
        rejected=by_state.get(ReviewState.REJECTED.value, (0, 0))[0],
        pending=by_state.get(ReviewState.PENDING.value, (0, 0))[0],
        active_seconds=sum(ms for _, ms in by_state.values()) // 1000,
    )
