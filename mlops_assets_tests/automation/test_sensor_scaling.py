"""A new-data sensor tick's work follows the new files, not the directory's history.

Counted, not timed: instance (database) calls made by one tick, and file-system calls
made by the scan. See benchmarks/sensor_tick.py for the wall-clock view.
"""

from __future__ import annotations

import collections
import inspect
import io
import os
import time

import dagster as dg
import polars as pl

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.pipeline import Pipeline
from mlops_assets.sources import local as arrivals

N_NEW = 5


def _tiny_parquet() -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"a": [1]}).write_parquet(buf)
    return buf.getvalue()


TINY = _tiny_parquet()     # a complete file: the scan checks the footer of each new file


def _write(directory, start, count):
    names = []
    for i in range(start, start + count):
        name = f"loans_{i:06d}.parquet"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(TINY)
        names.append(name)
    return names


class _CountingEntry:
    """An os.DirEntry that counts stat() calls."""

    def __init__(self, entry, counts):
        self._entry, self._counts = entry, counts

    def stat(self, *args, **kwargs):
        self._counts["stat"] += 1
        return self._entry.stat(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._entry, name)


class _CountingOs:
    """Stands in for the `os` module inside sources.local only; counts the scan's calls."""

    def __init__(self, counts):
        self._counts = counts

    def scandir(self, path):
        return _CountingScandir(os.scandir(path), self._counts)

    def open(self, path, flags, *args):
        self._counts["open"] += 1
        return os.open(path, flags, *args)

    def __getattr__(self, name):
        return getattr(os, name)


class _CountingScandir:
    def __init__(self, it, counts):
        self._it, self._counts = it, counts

    def __enter__(self):
        self._it.__enter__()
        return self

    def __exit__(self, *exc):
        return self._it.__exit__(*exc)

    def __iter__(self):
        for entry in self._it:
            self._counts["entries"] += 1
            yield _CountingEntry(entry, self._counts)


def _count_instance_calls(monkeypatch, instance, counts):
    """Wrap every public method of this instance object so each call is counted by name."""
    for name, member in inspect.getmembers(type(instance)):
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        bound = getattr(instance, name)

        def counted(*args, __name=name, __bound=bound, **kwargs):
            counts[__name] += 1
            return __bound(*args, **kwargs)

        monkeypatch.setattr(instance, name, counted)


def _tick_with_history(tmp_path, monkeypatch, n_old):
    """Ingest n_old files with one tick, add N_NEW more, count what the next tick does."""
    from mlops_assets_tests.conftest import small_spec

    spec = small_spec(tmp_path / f"h{n_old}")
    names = Pipeline(spec)
    defs = build_mlops_defs(spec)
    sensor_name = names.sensor("new_data")
    sensor = defs.resolve_sensor_def(sensor_name)
    landing = spec.source.path
    os.makedirs(landing, exist_ok=True)     # the definitions created it already
    resources = {k: defs.resources[k] for k in sensor.required_resource_keys}
    with dg.instance_for_test() as instance:
        def tick(cursor):
            return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                                  sensor_name=sensor_name, resources=resources))

        old = _write(landing, 0, n_old)
        previous = tick(None)
        assert len(previous.run_requests) == n_old
        instance.add_dynamic_partitions(names.partitions_name, old)
        # Old files on the (inclusive) watermark are looked at again: with fine-grained
        # file timestamps that is the newest one; with coarse ones, those sharing its tick.
        mark = arrivals.ArrivalCursor.parse(previous.cursor).watermark_ns
        on_mark = sum(1 for name in old if _arrived_ns(os.path.join(landing, name)) >= mark)
        time.sleep(0.01)                                   # strictly after the watermark
        new = _write(landing, n_old, N_NEW)

        calls: collections.Counter = collections.Counter()
        fs: collections.Counter = collections.Counter()
        with monkeypatch.context() as m:
            _count_instance_calls(m, instance, calls)
            m.setattr(arrivals, "os", _CountingOs(fs))
            result = tick(previous.cursor)
        assert [r.partition_key for r in result.run_requests] == new
        return calls, fs, on_mark


def _arrived_ns(path):
    st = os.stat(path)
    return max(st.st_mtime_ns, st.st_ctime_ns)


def test_instance_calls_follow_new_files_not_history(tmp_path, monkeypatch):
    calls, _, on_mark = _tick_with_history(tmp_path, monkeypatch, 1_000)
    baseline, _, _ = _tick_with_history(tmp_path, monkeypatch, 10)
    # One partition lookup per new file, none for the history: not even for the old file(s)
    # on the (inclusive) watermark, which the cursor remembers by size and mtime...
    assert 1 <= on_mark < 100
    assert calls["has_dynamic_partition"] == N_NEW
    # ...and otherwise the same constant database work as with a short history.
    others = calls - collections.Counter(has_dynamic_partition=calls["has_dynamic_partition"])
    base_others = baseline - collections.Counter(has_dynamic_partition=baseline["has_dynamic_partition"])
    assert others == base_others and sum(others.values()) <= 3, (calls, baseline)


def test_scan_lists_the_directory_once_and_stats_each_file_at_most_once(tmp_path, monkeypatch):
    # Listing is the one part that sees every file: one readdir pass and one lstat per data
    # file (metadata only: that is how an in-place overwrite of an old file is seen);
    # contents are read for new files only.
    _, fs, _ = _tick_with_history(tmp_path, monkeypatch, 1_000)
    assert fs["entries"] == 1_000 + N_NEW
    assert fs["stat"] <= fs["entries"]
    assert fs["open"] == N_NEW                    # the footer check of each new file, nothing else
