"""Each annotator's accuracy per skill: a Beta(α, β) posterior moved by the evidence each decision carries.

Evidence and its weight, by where a decision came from:
- a gold item (the answer is known): 1;
- a reviewer's decision (a person looked at the label): 1;
- consensus (the majority can itself be wrong): 0.5;
- acceptance under the gold policy, or automatic acceptance after the review window: none (nobody checked).
An appeal that overturns a rejection moves the weight that rejection added from β to α.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorSkill
from marketplace.work.models import Label

GOLD_WEIGHT = 1.0
REVIEW_WEIGHT = 1.0
CONSENSUS_WEIGHT = 0.5


def _skill_row(annotator_id: int, skill_id: int) -> tuple[object, object]:
    return AnnotatorSkill.annotator_id == annotator_id, AnnotatorSkill.skill_id == skill_id


def record_outcome(
    session: Session, *, annotator_id: int, skill_id: int, correct: bool, weight: float, gold: bool = False
) -> None:
    """Add one decision's evidence to the annotator's posterior for the skill (a gold item counts as seen too)."""
    if weight <= 0:
        return
    values: dict[str, object] = (
        {"accuracy_alpha": AnnotatorSkill.accuracy_alpha + weight}
        if correct
        else {"accuracy_beta": AnnotatorSkill.accuracy_beta + weight}
    )
    if gold:
        values["gold_seen"] = AnnotatorSkill.gold_seen + 1
        if correct:
            values["gold_correct"] = AnnotatorSkill.gold_correct + 1
    # One UPDATE with relative values: two decisions about the same annotator at once both count.
    session.execute(
        update(AnnotatorSkill)
        .where(*_skill_row(annotator_id, skill_id))
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )


def overturn_outcome(
    session: Session, *, annotator_id: int, skill_id: int, weight: float, gold: bool
) -> None:
    """Move a rejection's evidence from β to α, because an appeal found the label right after all."""
    if weight <= 0:
        return
    values: dict[str, object] = {
        "accuracy_alpha": AnnotatorSkill.accuracy_alpha + weight,
        "accuracy_beta": AnnotatorSkill.accuracy_beta - weight,
    }
    if gold:
        values["gold_correct"] = AnnotatorSkill.gold_correct + 1
    session.execute(
        update(AnnotatorSkill)
        .where(*_skill_row(annotator_id, skill_id))
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )


def rejection_weight(label: Label) -> float:
    """The evidence a rejection of this label added: by gold item, by a reviewer, or by consensus."""
    if label.is_gold:
        return GOLD_WEIGHT
    if label.reviewed_by_id is not None:
        return REVIEW_WEIGHT
    return CONSENSUS_WEIGHT
