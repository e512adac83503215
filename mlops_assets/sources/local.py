"""Which files in a landing directory are new, changed and complete. No Dagster.

A file's arrival time is max(mtime, ctime): a rename or `mv` into the directory updates
ctime even when mtime is preserved, so a moved-in old file is still seen as new, and any
write (an in-place overwrite included) moves it forward, which no user can undo (ctime cannot
be set). The cursor is a watermark on arrival time plus the identity (size, mtime, a short
content hash) of the files handled at or after it. A file behind the watermark has not
changed since a tick handled it; one at or after it is compared with what the cursor
remembers, so an overwrite is never mistaken for "already ingested". Files not yet taken
hold the watermark back, so a file that lands during a tick is examined on the next one.

Every data file is stat'ed once per tick (without following links: metadata only); contents
are read only for new or changed files: the footer probe here, the hash in the sensor.

Complete means: settled (unchanged for `settle_seconds`), its `_SUCCESS` marker present in
marker mode, and finished by its format: a Parquet file ends with its footer (magic `PAR1`,
and the footer parses), a CSV ends with a line break. A writer that pauses longer than the
settle time therefore leaves a file that waits instead of one that is taken half-written.
Residual risk: a CSV writer that pauses right after a line break (see docs/operations.md).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass, field

from mlops_assets.sources.keys import (
    DATA_SUFFIXES,
    SUCCESS_SUFFIX,
    TEMP_SUFFIXES,
    is_data_name,
    is_temporary,
    partition_key_for_file,
)

__all__ = ["DATA_SUFFIXES", "SUCCESS_SUFFIX", "TEMP_SUFFIXES", "Arrival", "ArrivalCursor", "ArrivalScan",
           "Waiting", "check_source_path", "is_temporary", "scan_arrivals", "unfinished"]

SHORT_HASH = 16   # hex digits of the SHA-256 kept in the cursor: enough to tell versions apart


@dataclass(frozen=True)
class Arrival:
    name: str
    path: str
    size: int
    arrived_ns: int
    mtime_ns: int = 0
    etag: str = ""         # S3 objects only
    refused: str = ""      # why raw_data will refuse it (a link, not a regular file): never read here


@dataclass(frozen=True)
class Waiting:
    arrival: Arrival
    why: str


@dataclass
class ArrivalScan:
    ready: list[Arrival] = field(default_factory=list)        # complete: to identify and request
    waiting: list[Waiting] = field(default_factory=list)      # settling, no marker, unfinished
    unkeyable: list[Arrival] = field(default_factory=list)    # names that cannot be partition keys
    unchanged: list[Arrival] = field(default_factory=list)    # as the cursor remembers them
    ignored: list[str] = field(default_factory=list)          # temp names, unknown suffixes, folders
    scanned: int = 0
    history: int = 0                                          # behind the watermark


@dataclass(frozen=True)
class ArrivalCursor:
    watermark_ns: int = 0
    # name -> (size, mtime_ns, short sha256) of files handled at or after the watermark.
    seen: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> ArrivalCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        seen = {name: (int(v[0]), int(v[1]), str(v[2])) for name, v in (data.get("seen") or {}).items()}
        return cls(int(data.get("watermark_ns", 0)), seen)

    def dump(self) -> str:
        return json.dumps({"watermark_ns": self.watermark_ns,
                           "seen": {n: list(v) for n, v in sorted(self.seen.items())}})

    def remembers(self, arrival: Arrival) -> bool:
        known = self.seen.get(arrival.name)
        return known is not None and known[:2] == (arrival.size, arrival.mtime_ns)

    def advance(self, handled: list[tuple[Arrival, str]], waiting_ns: list[int]) -> ArrivalCursor:
        """The cursor after a tick: past every handled file, never past one still waiting.
        `handled`: (arrival, sha256 or "") of the files this tick took, reported or kept."""
        newest = max([self.watermark_ns, *(a.arrived_ns for a, _ in handled)])
        mark = min([newest, *waiting_ns])
        seen = {a.name: (a.size, a.mtime_ns, sha[:SHORT_HASH]) for a, sha in handled if a.arrived_ns >= mark}
        return ArrivalCursor(mark, seen)


def scan_arrivals(
    directory: str,
    cursor: ArrivalCursor,
    *,
    settle_seconds: float = 2.0,
    require_success_marker: bool = False,
    complete_within_seconds: float = 3600.0,
    allow_symlinks: bool = False,
    fmt: str = "auto",
    now_ns: int | None = None,
) -> ArrivalScan:
    """Classify the data files that arrived at or after the cursor's watermark."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    scan = ArrivalScan()
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return scan
    names: set[str] = set()
    candidates: list[Arrival] = []
    with entries:
        for entry in entries:
            scan.scanned += 1
            names.add(entry.name)
            if not is_data_name(entry.name):
                if not entry.name.endswith(SUCCESS_SUFFIX):
                    scan.ignored.append(entry.name)
                continue
            arrival = _arrival(entry, allow_symlinks)
            if arrival is None:
                continue
            if arrival.arrived_ns < cursor.watermark_ns:
                scan.history += 1
            elif arrival.refused == "a directory":
                scan.ignored.append(f"{entry.name} (a directory)")
            else:
                candidates.append(arrival)

    settle_ns, give_up_ns = int(settle_seconds * 1e9), int(complete_within_seconds * 1e9)
    for arrival in sorted(candidates, key=lambda a: (a.arrived_ns, a.name)):
        age = now_ns - arrival.arrived_ns
        if cursor.remembers(arrival):
            scan.unchanged.append(arrival)
        elif age < settle_ns and not arrival.refused:
            scan.waiting.append(Waiting(arrival, f"settling (changed {age / 1e9:.0f} s ago)"))
        elif require_success_marker and not arrival.refused and (arrival.name + SUCCESS_SUFFIX) not in names:
            scan.waiting.append(Waiting(arrival, f"no {arrival.name + SUCCESS_SUFFIX} marker yet"))
        elif partition_key_for_file(arrival.name) is None:
            scan.unkeyable.append(arrival)
        elif arrival.refused:
            scan.ready.append(arrival)          # raw_data refuses and quarantines it; nothing to read here
        elif (problem := unfinished(arrival.path, fmt, follow_symlinks=allow_symlinks)) and age < give_up_ns:
            scan.waiting.append(Waiting(arrival, f"{problem}; taken as it is {complete_within_seconds:.0f} s "
                                                 "after its last change"))
        else:
            scan.ready.append(arrival)
    return scan


def _arrival(entry: os.DirEntry, allow_symlinks: bool) -> Arrival | None:
    """An entry's arrival, from lstat (a link is never followed unless allowed)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:   # deleted or renamed while we looked
        return None
    arrived, refused = max(st.st_mtime_ns, st.st_ctime_ns), ""
    if stat.S_ISLNK(st.st_mode):
        if not allow_symlinks:
            return Arrival(entry.name, entry.path, st.st_size, arrived, st.st_mtime_ns, refused="a symbolic link")
        try:
            st = os.stat(entry.path)
        except FileNotFoundError:
            return Arrival(entry.name, entry.path, 0, arrived, 0, refused="a link to a missing file")
        # A change to the link's target counts as a change of the file.
        arrived = max(arrived, st.st_mtime_ns, st.st_ctime_ns)
    if stat.S_ISDIR(st.st_mode):
        refused = "a directory"
    elif not stat.S_ISREG(st.st_mode):
        refused = "not a regular file"
    return Arrival(entry.name, entry.path, st.st_size, arrived, st.st_mtime_ns, refused=refused)


def unfinished(path: str, fmt: str = "auto", *, follow_symlinks: bool = False) -> str | None:
    """Why a settled file still looks half-written, or None when its format says it is complete."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return f"cannot be opened ({type(exc).__name__})"
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return "empty (0 bytes)"
        if (fmt if fmt != "auto" else os.path.splitext(path)[1].lower().lstrip(".")) == "csv":
            fh.seek(size - 1)
            return None if fh.read(1) == b"\n" else "no line break at its end"
        return _parquet_unfinished(fh, size)


def _parquet_unfinished(fh, size: int) -> str | None:
    # Layout: "PAR1" <data> <footer> <footer length: 4 bytes LE> "PAR1". The footer is written last.
    if size < 12:
        return f"too short for a Parquet file ({size} bytes)"
    fh.seek(size - 8)
    tail = fh.read(8)
    footer_len = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or footer_len + 12 > size:
        return "no Parquet footer yet"
    import pyarrow.parquet as pq

    fh.seek(0)
    try:
        pq.read_metadata(fh)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a bad footer: all mean "not yet"
        return "its Parquet footer does not parse"
    return None


# Today's bucket rules, widened to what legacy (us-east-1) bucket names may hold.
S3_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,254}$")


def check_source_path(path: str) -> str:
    """`source.path`, checked when the definitions load, so a wrong path fails the code
    location with the field's name instead of every sensor tick saying "no new files".

    A local folder that does not exist yet is created: a new deployment's landing folder is
    usually empty and often not created until the first producer writes. A path that exists
    and is not a folder (a file, a FIFO, a link to one) is an error, as is an s3:// URI
    without a valid bucket name. The S3 prefix itself is not contacted here (no network at load).
    """
    from mlops_assets.spec import SpecError

    if path.startswith("s3://"):
        bucket = path[len("s3://"):].partition("/")[0]
        if not S3_BUCKET_RE.match(bucket):
            raise SpecError(f"source.path: {path!r} has no valid S3 bucket name ({bucket!r}); "
                            "expected s3://<bucket>/<prefix>")
        return path
    if "://" in path:
        raise SpecError(f"source.path: {path!r}: only local folders and s3:// URIs are supported")
    if os.path.lexists(path) and not os.path.isdir(path):
        what = "a link to a missing folder" if os.path.islink(path) and not os.path.exists(path) else "not a folder"
        raise SpecError(f"source.path: {path} is {what}; it must name the landing folder where data files arrive")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"source.path: the landing folder {path} does not exist and cannot be created: "
                        f"{exc.strerror or exc}") from exc
    return path
