"""Reading an arrival within limits, its identity, and quarantine; real files only."""

import hashlib
import io
import os
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.sources.files import (
    ArrivalChanged,
    ArrivalReadError,
    ArrivalRefused,
    FileIdentity,
    QuarantineError,
    cap_text,
    csv_shape,
    hash_local_file,
    quarantine_local_file,
    read_local_arrival,
)
from mlops_assets.spec import LimitsSpec


def _parquet(path, rows=10):
    pl.DataFrame({"a": list(range(rows)), "b": ["x"] * rows}).write_parquet(path)
    return path


def test_identity_is_size_mtime_and_a_streamed_sha256(tmp_path, monkeypatch):
    from mlops_assets.sources import files

    monkeypatch.setattr(files, "HASH_CHUNK", 7)          # several chunks for a small file
    path = _parquet(tmp_path / "a.parquet")
    identity = hash_local_file(str(path))
    st = path.stat()
    assert identity == FileIdentity(st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    assert FileIdentity.from_tags(identity.to_tags()) == identity
    assert FileIdentity.from_tags({"mlops/source_file": "x"}) is None


def test_same_content_compares_the_strongest_identity_both_sides_have():
    a = FileIdentity(10, 1, sha256="aa")
    assert a.same_content(FileIdentity(99, 2, sha256="aa"))            # touched, same bytes
    assert not a.same_content(FileIdentity(10, 1, sha256="bb"))        # same stat, other bytes
    assert FileIdentity(10, 1, etag="e1").same_content(FileIdentity(10, 5, sha256="cc", etag="e1"))
    assert FileIdentity(10, 1).same_content(FileIdentity(10, 1)) and not a.same_content(None)


def test_read_returns_the_frame_and_the_identity_of_the_bytes_decoded(tmp_path):
    path = _parquet(tmp_path / "a.parquet")
    frame, identity = read_local_arrival(str(path), limits=LimitsSpec())
    assert frame.height == 10 and identity.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    again, _ = read_local_arrival(str(path), limits=LimitsSpec(), expected=identity)
    assert again.equals(frame)


def test_expected_identity_mismatch_is_a_change_not_a_bad_file(tmp_path):
    path = _parquet(tmp_path / "a.parquet")
    seen = hash_local_file(str(path))
    _parquet(path, rows=20)
    with pytest.raises(ArrivalChanged, match="changed since the sensor picked it up"):
        read_local_arrival(str(path), expected=seen)
    assert not issubclass(ArrivalChanged, ArrivalReadError)     # so raw_data never quarantines it


def test_csv_shape_counts_lines_and_header_columns():
    assert csv_shape(b"a,b,c\n1,2,3\n4,5,6\n") == (2, 3)
    assert csv_shape(b"a,b\n1,2") == (1, 2)
    assert csv_shape(b'"x,y",z\r\n1,2\r\n') == (1, 2)
    assert csv_shape(b"a\n") == (0, 1)


def test_an_empty_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ArrivalRefused, match=f"arrival file {path} is empty \\(0 bytes\\)"):
        read_local_arrival(str(path), limits=LimitsSpec())


def test_quarantine_moves_aside_with_a_reason_and_keeps_earlier_files(tmp_path):
    first = tmp_path / "a.csv"
    first.write_text("one")
    moved = quarantine_local_file(str(first), "reason one")
    assert moved == str(tmp_path / "_quarantine" / "a.csv")
    first.write_text("two")
    moved_again = quarantine_local_file(str(first), "reason two")
    assert moved_again == str(tmp_path / "_quarantine" / "a.csv.1")
    assert Path(moved).read_text() == "one" and Path(moved_again).read_text() == "two"
    assert Path(moved_again + ".reason.txt").read_text() == "reason two\n"
    assert quarantine_local_file(str(tmp_path / "gone.csv"), "x") is None
    assert quarantine_local_file("s3://bucket/a.csv", "x") is None


def test_quarantine_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("precious")
    landing = tmp_path / "landing"
    (landing / "_quarantine").mkdir(parents=True)
    os.symlink(victim, landing / "_quarantine" / "a.csv.reason.txt")
    (landing / "a.csv").write_text("bad")
    moved = quarantine_local_file(str(landing / "a.csv"), "why")
    assert moved == str(landing / "_quarantine" / "a.csv.1") and victim.read_text() == "precious"
    # A quarantine "folder" that is a link to elsewhere is refused; the file stays put.
    other = tmp_path / "other"
    (other / "_quarantine").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path, other / "_quarantine")
    (other / "b.csv").write_text("bad")
    with pytest.raises(QuarantineError, match="is not a directory"):
        quarantine_local_file(str(other / "b.csv"), "why")
    assert (other / "b.csv").exists()


def test_long_names_are_shortened_in_quarantine_and_stay_distinct(tmp_path):
    names = ["x" * 240 + "1.csv", "x" * 240 + "2.csv"]
    moved = []
    for name in names:
        (tmp_path / name).write_text(name)
        moved.append(quarantine_local_file(str(tmp_path / name), "too long"))
    assert len(set(moved)) == 2 and all(len(os.path.basename(m)) <= 200 for m in moved)
    assert [Path(m).read_text() for m in moved] == names


def test_reasons_are_capped_with_a_count():
    assert cap_text("abc", 5) == "abc"
    assert cap_text("x" * 10, 4) == "xxxx ... [6 more characters]"


def test_a_parquet_footer_is_read_without_the_data(tmp_path):
    from mlops_assets.sources.files import parquet_shape

    path = tmp_path / "a.parquet"
    pl.DataFrame({f"c{i}": [1] * 1000 for i in range(7)}).write_parquet(path)
    assert parquet_shape(str(path), "a.parquet") == (1000, 7)
    with pytest.raises(ArrivalReadError, match="a.parquet is unreadable as parquet"):
        parquet_shape(io.BytesIO(b"PAR1 nothing"), "a.parquet")
