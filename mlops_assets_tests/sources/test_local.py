import os
import time

from mlops_assets.sources.local import ArrivalCursor, scan_arrivals


def _touch(path, data=b"x", when_ns=None):
    path.write_bytes(data)
    if when_ns is not None:
        os.utime(path, ns=(when_ns, when_ns))


def test_takes_settled_files_and_ignores_temporary_names(tmp_path):
    _touch(tmp_path / "a.parquet")
    _touch(tmp_path / ".b.parquet.tmp")
    _touch(tmp_path / "c.csv.part")
    _touch(tmp_path / "notes.txt")
    now = time.time_ns() + 10 * 10**9
    scan = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=1, now_ns=now)
    assert [a.name for a in scan.ready] == ["a.parquet"]
    assert {".b.parquet.tmp", "c.csv.part", "notes.txt"} <= set(scan.ignored)


def test_unsettled_file_holds_the_watermark_back(tmp_path):
    _touch(tmp_path / "old.parquet")
    time.sleep(0.01)
    _touch(tmp_path / "fresh.parquet")
    fresh_ns = os.stat(tmp_path / "fresh.parquet").st_ctime_ns
    scan = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=5, now_ns=fresh_ns + 10**9)
    assert scan.ready == []
    assert "fresh.parquet" in [a.name for a in scan.waiting]
    assert scan.watermark_ns <= fresh_ns
    later = scan_arrivals(str(tmp_path), ArrivalCursor(scan.watermark_ns), settle_seconds=5, now_ns=fresh_ns + 6 * 10**9)
    assert "fresh.parquet" in [a.name for a in later.ready]


def test_success_marker_mode(tmp_path):
    _touch(tmp_path / "a.parquet")
    now = time.time_ns() + 10**10
    scan = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=0, require_success_marker=True, now_ns=now)
    assert scan.ready == [] and [a.name for a in scan.waiting] == ["a.parquet"]
    _touch(tmp_path / "a.parquet._SUCCESS", b"")
    scan = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=0, require_success_marker=True, now_ns=now)
    assert [a.name for a in scan.ready] == ["a.parquet"]


def test_cursor_skips_history_and_sees_moved_in_old_files(tmp_path):
    for i in range(5):
        _touch(tmp_path / f"f{i}.parquet")
    now = time.time_ns() + 10**10
    first = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=0, now_ns=now)
    assert len(first.ready) == 5
    cursor = ArrivalCursor.parse(ArrivalCursor(first.watermark_ns + 1).dump())
    assert scan_arrivals(str(tmp_path), cursor, settle_seconds=0, now_ns=now).ready == []
    # A file written long ago and moved in now (mtime preserved) still counts as new.
    outside = tmp_path.parent / "outside.parquet"
    _touch(outside, when_ns=10**18)
    time.sleep(0.01)
    os.rename(outside, tmp_path / "late.parquet")
    later = scan_arrivals(str(tmp_path), cursor, settle_seconds=0, now_ns=time.time_ns() + 10**10)
    assert [a.name for a in later.ready] == ["late.parquet"]


def test_history_is_reported_and_known_names_are_skipped(tmp_path):
    _touch(tmp_path / "old.parquet")
    now = time.time_ns() + 10**10
    first = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=0, now_ns=now)
    later = scan_arrivals(str(tmp_path), ArrivalCursor(first.watermark_ns + 1), settle_seconds=0, now_ns=now)
    assert later.history == ["old.parquet"] and later.ready == []
    # A name the caller knows is ingested is skipped outright (no stat), even from cursor 0.
    _touch(tmp_path / "new.parquet")
    skipped = scan_arrivals(str(tmp_path), ArrivalCursor(), settle_seconds=0, now_ns=now, known={"old.parquet"})
    assert [a.name for a in skipped.ready] == ["new.parquet"]
