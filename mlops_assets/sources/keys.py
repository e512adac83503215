"""Partition keys and landing-file names: which may become one, on every entry path.

A partition key reaches `raw_data` from the new-data sensor, from the UI ("add partition"),
from the GraphQL/Python API and from the CLI (`dagster asset materialize --partition`).
Dagster accepts any string as a dynamic partition key, so a key is untrusted input: it
becomes part of file paths (the landing file it names, the artifact-store paths it scopes)
and passes this policy before any of them is built: a plain file name, no path separators,
no leading dot, no `..`, bounded length. An arrival key must also name a landing file the
sensor would take (a data suffix, not a temporary name), so a key added by hand can never
make `raw_data` read, move or quarantine some other file of the landing folder.
"""

from __future__ import annotations

import re

PARTITION_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
KEY_RULE = "a plain file name: letters, digits, '_', '-', '.', starting with a letter or digit, at most 200 characters, no '..'"

DATA_SUFFIXES = (".parquet", ".pq", ".csv")
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress", ".crdownload", ".filepart")
SUCCESS_SUFFIX = "._SUCCESS"
ARRIVAL_RULE = (f"a landing file name ending in {', '.join(DATA_SUFFIXES)} that is not temporary "
                f"(no leading '.', '_' or '~', no {', '.join(TEMP_SUFFIXES)} suffix)")


class PartitionKeyError(ValueError):
    """A partition key that must not be used; the message names the rule."""


def is_valid_partition_key(key: str) -> bool:
    return bool(isinstance(key, str) and PARTITION_KEY_RE.match(key)) and ".." not in key


def check_partition_key(key: str) -> str:
    """Return `key` unchanged, or raise naming the rule it breaks."""
    if not is_valid_partition_key(key):
        raise PartitionKeyError(f"partition key {_shown(key)} is refused: it must be {KEY_RULE}")
    return key


def is_temporary(name: str) -> bool:
    return name.startswith((".", "_", "~")) or name.lower().endswith(TEMP_SUFFIXES)


def is_data_name(name: str) -> bool:
    """A name the landing zone treats as an arrival (markers and temporary names are not)."""
    return not is_temporary(name) and name.lower().endswith(DATA_SUFFIXES)


def check_arrival_key(key: str) -> str:
    """A partition key of a file-sourced pipeline: a valid key that names an arrival file."""
    check_partition_key(key)
    if not is_data_name(key):
        raise PartitionKeyError(f"partition key {_shown(key)} is refused: it must be {ARRIVAL_RULE}")
    return key


def partition_key_for_file(file_name: str) -> str | None:
    """Arrival partition key = the file name, when it is a valid key."""
    return file_name if is_valid_partition_key(file_name) else None


def upstream_partition_key(asset_name: str, storage_id: int) -> str:
    """The key of one materialization of a user's upstream asset: always within the policy,
    whatever characters the asset's name holds."""
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", asset_name).replace("..", "_").lstrip("._-")[:150] or "upstream"
    return check_partition_key(f"{stem}-{int(storage_id)}")


def _shown(key: object, limit: int = 120) -> str:
    """A key as an error message shows it: quoted, control characters escaped, bounded."""
    text = repr(key)
    return text if len(text) <= limit else text[:limit] + f"... ({len(str(key))} characters)"
