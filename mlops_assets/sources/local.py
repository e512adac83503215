"""Which files in a landing directory are new and complete. Pure, no Dagster.

A file's arrival time is max(mtime, ctime): a rename or `mv` into the directory updates
ctime even when mtime is preserved, so a moved-in old file is still seen as new.
The cursor is a watermark on arrival time. Files not yet settled hold the watermark
back, so a file that lands (or is still being written) during a tick is examined
again on the next one and never lost. Candidates at or after the watermark are
deduplicated by the caller (the partition already exists).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection
from dataclasses import dataclass, field

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress", ".crdownload", ".filepart")
DATA_SUFFIXES = (".parquet", ".pq", ".csv")
SUCCESS_SUFFIX = "._SUCCESS"


@dataclass(frozen=True)
class Arrival:
    name: str
    path: str
    size: int
    arrived_ns: int


@dataclass
class ArrivalScan:
    ready: list[Arrival] = field(default_factory=list)
    waiting: list[Arrival] = field(default_factory=list)     # not settled / no marker yet
    ignored: list[str] = field(default_factory=list)          # temp names, unknown suffixes
    watermark_ns: int = 0
    scanned: int = 0
    history: list[str] = field(default_factory=list)          # before the watermark: taken long ago


@dataclass(frozen=True)
class ArrivalCursor:
    watermark_ns: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> ArrivalCursor:
        if not raw:
            return cls()
        return cls(int(json.loads(raw).get("watermark_ns", 0)))

    def dump(self) -> str:
        return json.dumps({"watermark_ns": self.watermark_ns})


def is_temporary(name: str) -> bool:
    return name.startswith((".", "_", "~")) or name.lower().endswith(TEMP_SUFFIXES)


def scan_arrivals(
    directory: str,
    cursor: ArrivalCursor,
    *,
    settle_seconds: float = 2.0,
    require_success_marker: bool = False,
    now_ns: int | None = None,
    known: Collection[str] = frozenset(),
) -> ArrivalScan:
    """List complete files that arrived at or after the cursor's watermark.

    `known`: names already ingested (their partition exists). They are skipped before
    the stat call, so a warm tick costs one directory listing plus work per new file.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    settle_ns = int(settle_seconds * 1e9)
    scan = ArrivalScan(watermark_ns=cursor.watermark_ns)
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
            if entry.name in known:
                continue
            if is_temporary(entry.name) or not entry.name.lower().endswith(DATA_SUFFIXES):
                if not entry.name.endswith(SUCCESS_SUFFIX):
                    scan.ignored.append(entry.name)
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:   # deleted or renamed while we looked
                continue
            arrived = max(st.st_mtime_ns, st.st_ctime_ns)
            if arrived < cursor.watermark_ns:
                scan.history.append(entry.name)
                continue
            if not entry.is_file():
                continue
            candidates.append(Arrival(entry.name, entry.path, st.st_size, arrived))

    oldest_waiting: int | None = None
    newest_ready = cursor.watermark_ns
    for arrival in sorted(candidates, key=lambda a: (a.arrived_ns, a.name)):
        settled = now_ns - arrival.arrived_ns >= settle_ns and arrival.size > 0
        marked = (arrival.name + SUCCESS_SUFFIX) in names
        if settled and (marked or not require_success_marker):
            scan.ready.append(arrival)
            newest_ready = max(newest_ready, arrival.arrived_ns)
        else:
            scan.waiting.append(arrival)
            oldest_waiting = arrival.arrived_ns if oldest_waiting is None else min(oldest_waiting, arrival.arrived_ns)
    # Never move past a file we have not taken yet.
    scan.watermark_ns = newest_ready if oldest_waiting is None else min(newest_ready, oldest_waiting)
    return scan
