"""The web UI's forms. Every POST form is a FlaskForm, so it carries and checks a CSRF token."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    HiddenField,
    PasswordField,
    StringField,
    TextAreaField,
)
from wtforms.validators import AnyOf, DataRequired, Length, Optional, ValidationError


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


class PeriodForm(FlaskForm):
    """A date range read from the query string (a GET: nothing changes, so no CSRF token)."""

    class Meta:
        csrf = False

    since = DateField("From", validators=[Optional()])
    until = DateField("Until (inclusive)", validators=[Optional()])
