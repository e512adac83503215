"""Partition keys: which names may become one, on every entry path (sensor, UI, API, CLI).

A partition key becomes part of file paths (the landing file it names, the artifact-store
paths it scopes), so it is untrusted input until it passes this policy: a plain file name,
no path separators, no leading dot, no `..`, bounded length.
"""

from __future__ import annotations

import re

PARTITION_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
KEY_RULE = "a plain file name: letters, digits, '_', '-', '.', starting with a letter or digit, at most 200 characters, no '..'"


class PartitionKeyError(ValueError):
    """A partition key that must not be used; the message names the rule."""


def is_valid_partition_key(key: str) -> bool:
    return bool(isinstance(key, str) and PARTITION_KEY_RE.match(key)) and ".." not in key


def check_partition_key(key: str) -> str:
    """Return `key` unchanged, or raise naming the rule it breaks."""
    if not is_valid_partition_key(key):
        raise PartitionKeyError(f"partition key {key!r} is refused: it must be {KEY_RULE}")
    return key


def partition_key_for_file(file_name: str) -> str | None:
    """Arrival partition key = the file name, when it is a valid key."""
    return file_name if is_valid_partition_key(file_name) else None
