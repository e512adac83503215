"""The pieces every section of a pipeline spec shares: the strict base model, the error type,
name rules and value types (kept apart so the section modules and `spec.py` import them
without a cycle).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    WithJsonSchema,
    model_validator,
)

import mlops_assets.spec_rules as rules

TaskType = Literal["binary", "multiclass", "regression"]
FeatureType = Literal["numeric", "categorical"]
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
OWNER_RE = re.compile(r"^(team:[A-Za-z0-9_\-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
# Dagster's rules for tag keys and values (strict tags are what the UI can filter on).
TAG_KEY_RE = re.compile(r"^([A-Za-z0-9_.\-]{1,63}/)?[A-Za-z0-9_.\-]{1,63}$")
TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_.\-]*$")

class SpecError(ValueError):
    """A pipeline spec that cannot be used; the message names the field."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        # (field path, rule) pairs, e.g. ("gate.main_metric", "'rmse' is not a binary metric; ...").
        self.problems = problems or []


class _Strict(BaseModel):
    # No NaN or infinity in any number: a bound of .nan would silently check nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        rules.raise_problems(rules.boolean_for_number_problems(cls, data))
        return data


# A declared category: text, or an integer code (3 and 3.0 become "3", matched by value).
CategoryValue = Annotated[
    str,
    BeforeValidator(rules.canonical_category),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
]
ClassLabel = Annotated[str | int, BeforeValidator(rules.class_label)]
