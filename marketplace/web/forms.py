"""The web UI's forms. Every POST form is a FlaskForm, so it carries and checks a CSRF token."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import AnyOf, DataRequired, InputRequired, Length, Optional, ValidationError

from marketplace.limits import EARLIEST, LATEST
from marketplace.projects.label_schema import KINDS
from marketplace.projects.models import ProjectStatus, ReviewPolicy


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])
    remember = BooleanField("Keep me signed in on this device")


class ActionForm(FlaskForm):
    """A button that changes something (log out, release, more time): only the CSRF token."""


class NextTaskForm(FlaskForm):
    #: empty: any project; else only this one
    project_id = HiddenField(validators=[Optional()])


class SubmitLabelForm(FlaskForm):
    """The label itself comes from inputs built from the project's schema; this carries the CSRF token and
    a key that makes a double submit (or a retried POST) return the first result."""

    submit_key = HiddenField(validators=[Length(max=200)])


IMPORT_FORMATS = [
    ("auto", "From the file name (.json, .jsonl, .csv, .tsv)"),
    ("json", "JSON array"),
    ("jsonl", "JSON Lines"),
    ("csv", "CSV with a header row"),
    ("tsv", "TSV with a header row"),
]


class ImportForm(FlaskForm):
    file = FileField("Task file", validators=[FileRequired("Choose a file to import.")])
    # The <select> is written by the template from IMPORT_FORMATS: WTForms 3.3 deprecates the tuple choices
    # that older versions require, and a plain field with AnyOf reads the same under both.
    format = StringField("Format", default="auto", validators=[AnyOf([value for value, _ in IMPORT_FORMATS])])


class ReviewForm(FlaskForm):
    decision = HiddenField(validators=[DataRequired()])
    reason = TextAreaField(
        "Reason (required to reject; the annotator sees it)", validators=[Length(max=1000)]
    )

    def validate_decision(self, field: Any) -> None:
        if field.data not in {"accept", "reject"}:
            raise ValidationError("Choose accept or reject.")

    def validate_reason(self, field: Any) -> None:
        if self.decision.data == "reject" and not (field.data or "").strip():
            raise ValidationError(
                "Say why the label is rejected: the annotator sees the reason and can appeal."
            )


class AppealForm(FlaskForm):
    comment = TextAreaField(
        "Why should the rejection be overturned?", validators=[DataRequired(), Length(max=2000)]
    )


class AppealDecisionForm(FlaskForm):
    decision = HiddenField(
        validators=[DataRequired(), AnyOf(["uphold", "deny"], message="Choose uphold or deny.")]
    )
    reason = TextAreaField("Reason (required to deny; the annotator sees it)", validators=[Length(max=1000)])

    def validate_reason(self, field: Any) -> None:
        if self.decision.data == "deny" and not (field.data or "").strip():
            raise ValidationError("Say why the appeal is denied: the annotator sees the reason.")


class FiniteDecimalField(DecimalField):
    """A decimal number: "NaN", "sNaN" and "Infinity" are not numbers (Python's Decimal reads them)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata(valuelist)
        if self.data is not None and not self.data.is_finite():
            self.data = None
            raise ValueError(self.gettext("Not a valid decimal value."))


def within_calendar(form: FlaskForm, field: Any) -> None:
    """Dates between 1970 and 9000, as the API's (`marketplace.api.Day`): arithmetic on them never overflows."""
    if field.data is not None and not EARLIEST.date() <= field.data <= LATEST.date():
        raise ValidationError(f"Give a date between {EARLIEST.year} and {LATEST.year}.")


class PeriodForm(FlaskForm):
    """A date range read from the query string (a GET: nothing changes, so no CSRF token)."""

    class Meta:
        csrf = False

    since = DateField("From", validators=[Optional(), within_calendar])
    until = DateField("Until (inclusive)", validators=[Optional(), within_calendar])


# The <select>s of the forms below are written by their templates from these lists (see IMPORT_FORMATS).
SCHEMA_KINDS = [
    ("single_choice", "One choice from a list"),
    ("multi_choice", "Several choices from a list"),
    ("text", "Free text"),
]
REVIEW_POLICIES = [
    ("manual", "Manual: a reviewer decides every label"),
    ("gold", "Gold: checked against known answers"),
    ("consensus", "Consensus: the agreeing majority is accepted"),
]
NEW_PROJECT_STATUSES = [
    ("active", "Open to annotators as soon as it has tasks and budget"),
    ("draft", "Draft: not open to annotators yet"),
]


class NewProjectForm(FlaskForm):
    """What `create_project` accepts, as people write it: ranges are checked by the API's own schema and the
    service (see marketplace.web.project_setup_views), so the web and the API refuse the same things."""

    # the organisation and the skill are <select>s filled from the database; the view checks them
    organisation_id = StringField("Organisation", validators=[DataRequired("Choose the organisation.")])
    name = StringField("Name", validators=[DataRequired("Give the project a name.")])
    instructions = TextAreaField("Instructions for annotators")
    schema_type = StringField(
        "Answer",
        default="single_choice",
        validators=[AnyOf(list(KINDS), message="Choose the kind of answer.")],
    )
    choices = TextAreaField("Choices, one per line")
    choice_min = IntegerField("Choose at least", validators=[Optional()])
    choice_max = IntegerField("Choose at most", validators=[Optional()])
    text_max_length = IntegerField("Longest answer (characters)", validators=[Optional()])
    skill = StringField("Skill", validators=[DataRequired("Choose the skill the work needs.")])
    min_level = IntegerField("Minimum skill level", default=1, validators=[InputRequired()])
    currency = StringField("Currency", default="EUR", validators=[DataRequired("Choose a currency.")])
    pay_per_label = StringField(
        "Pay per accepted label", validators=[DataRequired("Say what an accepted label pays.")]
    )
    labels_per_item = IntegerField("Labels per item", default=1, validators=[InputRequired()])
    review_policy = StringField(
        "Review",
        default=ReviewPolicy.MANUAL.value,
        validators=[AnyOf([p.value for p in ReviewPolicy], message="Choose a review policy.")],
    )
    gold_rate = FiniteDecimalField("Share of gold items", validators=[Optional()])
    agreement_threshold = FiniteDecimalField("Agreement needed (consensus)", validators=[Optional()])
    max_extra_labels = IntegerField(
        "Extra labels when annotators disagree (consensus)", validators=[Optional()]
    )
    review_window_hours = IntegerField("Review window in hours (manual)", validators=[Optional()])
    deadline = DateTimeLocalField(
        "Deadline (UTC)",
        format="%Y-%m-%dT%H:%M",
        validators=[InputRequired("Give a deadline.")],
    )
    lease_minutes = IntegerField("Lease length in minutes", validators=[Optional()])
    status = StringField(
        "Status",
        default=ProjectStatus.ACTIVE.value,
        validators=[AnyOf([value for value, _ in NEW_PROJECT_STATUSES], message="Choose a status.")],
    )


class FundingForm(FlaskForm):
    """An amount in the project's currency and the key that makes a double submit fund once."""

    amount = StringField("Amount", validators=[DataRequired("Enter an amount.")])
    funding_key = HiddenField(validators=[DataRequired()])


class BonusForm(FlaskForm):
    """Who gets a bonus, how much in the project's currency and why, and the key that makes a double submit pay
    once. The annotator is a <select> of the people who labelled in the project, written by the template; the
    reason's length is checked by the API's schema once the browser's CRLF line breaks are read as one."""

    annotator_id = StringField("Annotator", validators=[DataRequired("Choose who gets the bonus.")])
    amount = StringField("Amount", validators=[DataRequired("Enter an amount.")])
    reason = TextAreaField(
        "Reason (the annotator reads it)",
        validators=[DataRequired("Say why: the annotator reads the reason.")],
    )
    bonus_key = HiddenField(validators=[DataRequired()])


class BlockWorkerForm(FlaskForm):
    """Why an annotator is blocked from a project: required, kept with the block and sent in its event."""

    reason = StringField(
        "Reason",
        validators=[DataRequired("Say why: it is kept with the block."), Length(max=500)],
    )


class ReverseRejectionsForm(FlaskForm):
    """The rejected labels ticked on the page, and why they are reversed (shown to the annotator)."""

    label_ids = SelectMultipleField("Labels", coerce=str, validate_choice=False)
    reason = StringField(
        "Reason",
        validators=[DataRequired("Say why: the annotator reads it."), Length(max=1000)],
    )


class PayoutAccountForm(FlaskForm):
    """Open the payout account (its country is needed the first time) or continue its onboarding."""

    country = StringField("Country of your bank account", validators=[Optional()])


class ProjectSettingsForm(FlaskForm):
    """What `update_project` changes after creation, as people write it: amounts as decimals in the project's
    currency, the lease in minutes, the deadline as a UTC wall time. Ranges are checked by the API's schema and
    the service (see marketplace.web.project_settings_views)."""

    name = StringField("Name", validators=[DataRequired("Give the project a name.")])
    instructions = TextAreaField("Instructions for annotators")
    deadline = DateTimeLocalField(
        "Deadline (UTC)", format="%Y-%m-%dT%H:%M", validators=[InputRequired("Give a deadline.")]
    )
    pay_per_label = StringField(
        "Pay per accepted label", validators=[DataRequired("Say what an accepted label pays.")]
    )
    budget = StringField("Planned budget", validators=[DataRequired("Give the planned budget (0 for none).")])
    lease_minutes = IntegerField(
        "Lease length in minutes", validators=[InputRequired("Give the lease length in minutes.")]
    )
    webhook_url = StringField("Webhook URL", validators=[Optional()])
    # review parameters: `places=None` shows a stored 0.125 as it is, not rounded to 0.13 (which a save would
    # then write back as a change nobody made)
    gold_rate = FiniteDecimalField(
        "Share of gold items", places=None, validators=[InputRequired("Give the share of gold items.")]
    )
    gold_accuracy_floor = FiniteDecimalField(
        "Gold accuracy floor", places=None, validators=[InputRequired("Give the gold accuracy floor.")]
    )
    gold_min_items = IntegerField(
        "Gold items before the floor applies", validators=[InputRequired("Give a number of gold items.")]
    )
    pay_correct_gold = BooleanField("Pay for correct answers on gold items")
    agreement_threshold = FiniteDecimalField(
        "Agreement needed (consensus)", places=None, validators=[InputRequired("Give the agreement needed.")]
    )
    max_extra_labels = IntegerField(
        "Extra labels when annotators disagree (consensus)",
        validators=[InputRequired("Give a number of extra labels.")],
    )
    review_window_hours = IntegerField(
        "Review window in hours (manual)", validators=[InputRequired("Give the review window in hours.")]
    )
    min_seconds_per_label = FiniteDecimalField(
        "Minimum seconds per label",
        places=None,
        validators=[InputRequired("Give the minimum seconds per label (0 for none).")],
    )
    fast_answer_limit = IntegerField(
        "Fast answers before a block", validators=[InputRequired("Give the number of fast answers.")]
    )


class ProjectStatusForm(FlaskForm):
    """The status a button asks for; the service decides whether the project may go there."""

    status = StringField(
        validators=[AnyOf([s.value for s in ProjectStatus], message="Choose one of the offered changes.")]
    )
