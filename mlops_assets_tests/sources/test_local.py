"""Which landing files a scan takes, holds back or refuses; real files, links and FIFOs."""

import io
import os
import time

import polars as pl

from mlops_assets.sources.local import ArrivalCursor, scan_arrivals, unfinished

LATER = 10 * 10**9


def parquet_bytes(rows: int = 3) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"a": list(range(rows))}).write_parquet(buf)
    return buf.getvalue()


def _touch(path, data=None, when_ns=None):
    path.write_bytes(parquet_bytes() if data is None else data)
    if when_ns is not None:
        os.utime(path, ns=(when_ns, when_ns))


def _scan(directory, cursor=None, **kw):
    kw.setdefault("settle_seconds", 0)
    kw.setdefault("now_ns", time.time_ns() + LATER)
    return scan_arrivals(str(directory), cursor or ArrivalCursor(), **kw)


def test_takes_settled_files_and_ignores_temporary_names(tmp_path):
    _touch(tmp_path / "a.parquet")
    _touch(tmp_path / ".b.parquet.tmp")
    _touch(tmp_path / "c.csv.part")
    _touch(tmp_path / "notes.txt")
    scan = _scan(tmp_path, settle_seconds=1)
    assert [a.name for a in scan.ready] == ["a.parquet"]
    assert {".b.parquet.tmp", "c.csv.part", "notes.txt"} <= set(scan.ignored)


def test_unsettled_file_holds_the_watermark_back(tmp_path):
    _touch(tmp_path / "old.parquet")
    time.sleep(0.01)
    _touch(tmp_path / "fresh.parquet")
    fresh_ns = os.stat(tmp_path / "fresh.parquet").st_ctime_ns
    scan = _scan(tmp_path, settle_seconds=5, now_ns=fresh_ns + 10**9)
    assert scan.ready == []
    assert [w.arrival.name for w in scan.waiting if w.why.startswith("settling")] == ["old.parquet", "fresh.parquet"]
    later = _scan(tmp_path, ArrivalCursor(fresh_ns - 1), settle_seconds=5, now_ns=fresh_ns + 6 * 10**9)
    assert "fresh.parquet" in [a.name for a in later.ready]


def test_success_marker_mode(tmp_path):
    _touch(tmp_path / "a.parquet")
    scan = _scan(tmp_path, require_success_marker=True)
    assert scan.ready == [] and [(w.arrival.name, w.why) for w in scan.waiting] == [
        ("a.parquet", "no a.parquet._SUCCESS marker yet")]
    _touch(tmp_path / "a.parquet._SUCCESS", b"")
    assert [a.name for a in _scan(tmp_path, require_success_marker=True).ready] == ["a.parquet"]


def test_cursor_skips_history_and_sees_moved_in_old_files(tmp_path):
    for i in range(5):
        _touch(tmp_path / f"f{i}.parquet")
    first = _scan(tmp_path)
    assert len(first.ready) == 5
    cursor = ArrivalCursor.parse(ArrivalCursor(max(a.arrived_ns for a in first.ready) + 1).dump())
    again = _scan(tmp_path, cursor)
    assert again.ready == [] and again.history == 5
    # A file written long ago and moved in now (mtime preserved) still counts as new.
    outside = tmp_path.parent / "outside.parquet"
    _touch(outside, when_ns=10**18)
    time.sleep(0.01)
    os.rename(outside, tmp_path / "late.parquet")
    assert [a.name for a in _scan(tmp_path, cursor).ready] == ["late.parquet"]


def test_the_cursor_remembers_files_at_its_watermark_and_sees_them_change(tmp_path):
    path = tmp_path / "a.parquet"
    _touch(path)
    (arrival,) = _scan(tmp_path).ready
    cursor = ArrivalCursor.parse(ArrivalCursor().advance([(arrival, "ab" * 32)], []).dump())
    assert cursor.watermark_ns == arrival.arrived_ns and cursor.seen == {"a.parquet": (arrival.size, arrival.mtime_ns,
                                                                                       "ab" * 8)}
    remembered = _scan(tmp_path, cursor)
    assert [a.name for a in remembered.unchanged] == ["a.parquet"] and remembered.ready == []
    # Overwritten in place: ctime moves forward, so it is at or after the watermark and differs.
    time.sleep(0.01)
    path.write_bytes(parquet_bytes(rows=10))
    changed = _scan(tmp_path, cursor)
    assert [a.name for a in changed.ready] == ["a.parquet"] and changed.unchanged == []


def test_a_parquet_file_without_its_footer_waits_however_old_it_is(tmp_path):
    """A producer that pauses mid-file: settled by mtime, but not finished by its format."""
    full = parquet_bytes(rows=1_000)
    path = tmp_path / "slow.parquet"
    path.write_bytes(full[: len(full) // 2])
    scan = _scan(tmp_path, settle_seconds=1)
    assert scan.ready == [] and [w.why.split(";")[0] for w in scan.waiting] == ["no Parquet footer yet"]
    # The producer resumes and finishes: the file is complete and taken.
    with open(path, "ab") as fh:
        fh.write(full[len(full) // 2:])
    assert [a.name for a in _scan(tmp_path, settle_seconds=1).ready] == ["slow.parquet"]


def test_unfinished_names_what_is_missing(tmp_path):
    full = parquet_bytes()
    cases = {
        "empty.parquet": b"",
        "short.parquet": b"PAR1",
        "nofooter.parquet": full[:-1],
        "badfooter.parquet": full[:4] + b"\0" * (len(full) - 8) + full[-8:],
        "open.csv": b"a,b\n1,2",
        "done.csv": b"a,b\n1,2\n",
        "done.parquet": full,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    found = {name: unfinished(str(tmp_path / name)) for name in cases}
    assert found == {
        "empty.parquet": "empty (0 bytes)",
        "short.parquet": "too short for a Parquet file (4 bytes)",
        "nofooter.parquet": "no Parquet footer yet",
        "badfooter.parquet": "its Parquet footer does not parse",
        "open.csv": "no line break at its end",
        "done.csv": None,
        "done.parquet": None,
    }
    assert unfinished(str(tmp_path / "done.parquet"), "csv") == "no line break at its end"   # source.format wins


def test_an_empty_file_waits_only_until_complete_within_seconds(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    arrived = os.stat(tmp_path / "empty.parquet").st_ctime_ns
    early = _scan(tmp_path, complete_within_seconds=60, now_ns=arrived + 59 * 10**9)
    assert [w.why for w in early.waiting] == ["empty (0 bytes); taken as it is 60 s after its last change"]
    assert early.ready == []
    late = _scan(tmp_path, complete_within_seconds=60, now_ns=arrived + 61 * 10**9)
    assert [a.name for a in late.ready] == ["empty.parquet"] and late.waiting == []


def test_links_and_special_files_are_refused_and_never_opened(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    outside = tmp_path / "secret.parquet"
    _touch(outside)
    os.symlink(outside, landing / "link.parquet")
    os.symlink(tmp_path / "gone.parquet", landing / "dangling.parquet")
    os.mkfifo(landing / "pipe.parquet")       # opening it for reading would block the tick
    (landing / "folder.parquet").mkdir()
    scan = _scan(landing)
    assert {a.name: a.refused for a in scan.ready} == {
        "link.parquet": "a symbolic link", "dangling.parquet": "a symbolic link", "pipe.parquet": "not a regular file"}
    assert "folder.parquet (a directory)" in scan.ignored
    followed = _scan(landing, allow_symlinks=True)
    assert {a.name: a.refused for a in followed.ready} == {
        "link.parquet": "", "dangling.parquet": "a link to a missing file", "pipe.parquet": "not a regular file"}
    link = next(a for a in followed.ready if a.name == "link.parquet")
    assert link.size == outside.stat().st_size


def test_names_that_cannot_be_keys_are_listed_once_settled(tmp_path):
    _touch(tmp_path / "bad name!.parquet")
    _touch(tmp_path / ("x" * 201 + ".csv"), b"a\n1\n")
    waiting = _scan(tmp_path, settle_seconds=3600, now_ns=time.time_ns())
    assert waiting.unkeyable == [] and len(waiting.waiting) == 2
    settled = _scan(tmp_path)
    assert sorted(a.name for a in settled.unkeyable) == ["bad name!.parquet", "x" * 201 + ".csv"]
    assert settled.ready == []


def test_old_cursors_parse(tmp_path):
    assert ArrivalCursor.parse('{"watermark_ns": 5}') == ArrivalCursor(5, {})
    assert ArrivalCursor.parse(None) == ArrivalCursor()
