"""The partition-key and landing-name policy shared by every entry path."""

import pytest

from mlops_assets.pipeline import StorageLayout
from mlops_assets.sources.files import arrival_uri
from mlops_assets.sources.keys import (
    PartitionKeyError,
    check_arrival_key,
    check_partition_key,
    is_data_name,
    partition_key_for_file,
    upstream_partition_key,
)

REFUSED = ["../../../x/victim.conf", "../x.parquet", "a/b.parquet", "/etc/passwd", ".hidden.parquet",
           "a..b.parquet", "", "x" * 201, "bad name.parquet", "x\ny.parquet", "ü.parquet", "_x.parquet"]


@pytest.mark.parametrize("key", REFUSED)
def test_keys_that_could_name_another_path_are_refused_everywhere(key):
    assert partition_key_for_file(key) is None
    with pytest.raises(PartitionKeyError, match="is refused: it must be a plain file name"):
        check_partition_key(key)
    for build in (lambda: arrival_uri("/landing", key), lambda: arrival_uri("s3://bucket/landing", key),
                  lambda: StorageLayout("demo").raw(key), lambda: StorageLayout("demo").quarantine_record(key)):
        with pytest.raises(PartitionKeyError):
            build()


def test_an_arrival_key_must_name_a_data_file():
    assert check_arrival_key("loans_2026-01-01.parquet") == "loans_2026-01-01.parquet"
    for key in ("notes.txt", "loans.parquet.tmp", "x.csv.part", "x.parquet._SUCCESS"):
        with pytest.raises(PartitionKeyError, match="must be a landing file name ending in .parquet, .pq, .csv"):
            check_arrival_key(key)
    assert arrival_uri("s3://bucket/landing/", "a.pq") == "s3://bucket/landing/a.pq"
    assert is_data_name("A.CSV") and not is_data_name("~a.csv")


def test_error_messages_escape_and_bound_the_key():
    with pytest.raises(PartitionKeyError) as info:
        check_partition_key("x\n" * 500)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400 and "(1000 characters)" in message


def test_upstream_keys_are_always_valid():
    assert upstream_partition_key("raw_loans", 42) == "raw_loans-42"
    assert upstream_partition_key("..we/ird name", 7) == "we_ird_name-7"
    assert upstream_partition_key("", 1) == "upstream-1"
    assert len(upstream_partition_key("a" * 500, 123)) <= 200
