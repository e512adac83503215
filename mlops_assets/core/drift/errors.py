"""Shared types and the input error of the drift engine."""

from __future__ import annotations

from typing import Literal

ColumnKind = Literal["numeric", "categorical"]
COLUMN_KINDS: tuple[str, ...] = ("numeric", "categorical")


class DriftInputError(ValueError):
    """The data cannot be compared with the reference (missing column, changed type, ...).

    The message always names the offending column, so a schema change surfaces as an error
    instead of a silent "no drift".
    """
