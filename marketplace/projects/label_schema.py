"""Label schemas: what a project asks for, and whether a submitted value fits it.

Three kinds, as in MTurk's and Label Studio's basic templates:
- ``{"type": "single_choice", "choices": ["cat", "dog"]}`` → a value like ``"cat"``;
- ``{"type": "multi_choice", "choices": [...], "min": 1, "max": 3}`` → a list of distinct choices;
- ``{"type": "text", "max_length": 2000}`` → a non-empty string.
"""

from __future__ import annotations

from typing import Any

from marketplace.errors import InvalidInput

KINDS = ("single_choice", "multi_choice", "text")
MAX_CHOICES = 200


def validate_schema(schema: Any) -> dict[str, Any]:
    """The schema normalised with its defaults, or a 422 naming what is wrong."""
    if not isinstance(schema, dict):
        raise InvalidInput("label_schema must be an object.", details={"label_schema": "expected an object"})
    kind = schema.get("type")
    if kind not in KINDS:
        raise InvalidInput(
            f"label_schema.type must be one of {', '.join(KINDS)}.", details={"label_schema.type": repr(kind)}
        )
    unknown = set(schema) - {"type", "choices", "min", "max", "max_length"}
    if unknown:
        raise InvalidInput("label_schema has unknown fields.", details={"label_schema": sorted(unknown)})
    if kind == "text":
        max_length = schema.get("max_length", 2000)
        if type(max_length) is not int or not 1 <= max_length <= 100_000:
            raise InvalidInput(
                "label_schema.max_length must be an integer from 1 to 100000.",
                details={"label_schema.max_length": max_length},
            )
        return {"type": kind, "max_length": max_length}
    choices = schema.get("choices")
    if (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= MAX_CHOICES
        or not all(isinstance(c, str) and c.strip() for c in choices)
        or len(set(choices)) != len(choices)
    ):
        raise InvalidInput(
            f"label_schema.choices must be 2 to {MAX_CHOICES} distinct non-empty strings.",
            details={"label_schema.choices": choices},
        )
    if kind == "single_choice":
        return {"type": kind, "choices": choices}
    low, high = schema.get("min", 1), schema.get("max", len(choices))
    if type(low) is not int or type(high) is not int or not 0 <= low <= high <= len(choices) or high < 1:
        raise InvalidInput(
            "label_schema.min and max must be integers with 0 ≤ min ≤ max ≤ number of choices, and max ≥ 1.",
            details={"label_schema.min": low, "label_schema.max": high},
        )
    return {"type": kind, "choices": choices, "min": low, "max": high}


def validate_value(schema: dict[str, Any], value: Any, *, field: str = "value") -> Any:
    """`value` normalised (multi-choice sorted), or a 422 saying what the schema expects."""
    kind = schema["type"]
    if kind == "single_choice":
        if not isinstance(value, str) or value not in schema["choices"]:
            raise InvalidInput(f"{field} must be one of the choices.", details={field: schema["choices"]})
        return value
    if kind == "multi_choice":
        if (
            not isinstance(value, list)
            or not all(isinstance(v, str) and v in schema["choices"] for v in value)
            or len(set(value)) != len(value)
        ):
            raise InvalidInput(
                f"{field} must be a list of distinct choices.", details={field: schema["choices"]}
            )
        if not schema["min"] <= len(value) <= schema["max"]:
            raise InvalidInput(f"{field} must have {schema['min']} to {schema['max']} choices.")
        return sorted(value, key=schema["choices"].index)
    if not isinstance(value, str) or not value.strip() or len(value) > schema["max_length"]:
        raise InvalidInput(f"{field} must be non-empty text of at most {schema['max_length']} characters.")
    return value


def values_agree(schema: dict[str, Any], a: Any, b: Any) -> bool:
    """Whether two valid values count as the same answer (text compares trimmed and case-folded)."""
    if schema["type"] == "text":
        return bool(str(a).strip().casefold() == str(b).strip().casefold())
    return bool(a == b)
