"""S3 listing cursor semantics, with S3's one-second LastModified resolution pinned.

The listing client is a stand-in only because real S3 timestamps cannot be chosen; the
real-server behaviour is covered in mlops_assets_tests/services/test_s3_lifecycle.py.
"""

import datetime as dt

from mlops_assets.sources.s3 import dump_s3_cursor, parse_s3_cursor, scan_s3_arrivals

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


class FakeS3:
    def __init__(self):
        self.objects: list[dict] = []

    def put(self, key, when, size=10):
        self.objects.append({"Key": key, "LastModified": when, "Size": size})

    def get_paginator(self, _name):
        objects = self.objects

        class Paginator:
            def paginate(self, Bucket, Prefix, Delimiter):
                yield {"Contents": sorted((o for o in objects if o["Key"].startswith(Prefix)), key=lambda o: o["Key"])}

        return Paginator()


def _scan(client, cursor, **kw):
    scan, new = scan_s3_arrivals(client, "s3://b/landing/", parse_s3_cursor(dump_s3_cursor(cursor)), **kw)
    return [a.name for a in scan.ready], new


def test_same_second_key_listed_before_the_cursor_key_is_not_skipped():
    s3 = FakeS3()
    s3.put("landing/b.parquet", T0)
    taken, cursor = _scan(s3, parse_s3_cursor(None))
    assert taken == ["b.parquet"]
    s3.put("landing/a.parquet", T0)          # same second, sorts before b
    taken, cursor = _scan(s3, cursor)
    assert taken == ["a.parquet"]
    assert _scan(s3, cursor)[0] == []


def test_newer_objects_only_and_marker_mode_holds_the_watermark():
    s3 = FakeS3()
    s3.put("landing/d1.parquet", T0)
    _, cursor = _scan(s3, parse_s3_cursor(None))
    s3.put("landing/d2.parquet", T0 + dt.timedelta(seconds=5))
    s3.put("landing/d3.parquet", T0 + dt.timedelta(seconds=9))
    s3.put("landing/d3.parquet._SUCCESS", T0 + dt.timedelta(seconds=9))
    taken, held = _scan(s3, cursor, require_success_marker=True)
    assert taken == ["d3.parquet"]                     # d2 waits for its marker
    assert held.last_modified < T0 + dt.timedelta(seconds=5)
    s3.put("landing/d2.parquet._SUCCESS", T0 + dt.timedelta(seconds=12))
    taken, _ = _scan(s3, held, require_success_marker=True)
    assert "d2.parquet" in taken                       # never skipped


def test_temporary_names_and_subfolders_are_ignored():
    s3 = FakeS3()
    s3.put("landing/.x.parquet.tmp", T0)
    s3.put("landing/sub/y.parquet", T0)
    s3.put("landing/z.parquet", T0)
    taken, _ = _scan(s3, parse_s3_cursor(None))
    assert taken == ["z.parquet"]
