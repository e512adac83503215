"""Arrivals nobody planned for, each run through `raw_data` and `validated_features`.

Every case ends one of three ways, and the table says which: *quarantined* (the file cannot be
read as it is: raw_data fails naming the line or byte and the rule, and moves the file aside),
*rejected* (it reads, but breaks a rule: the blocking check names the column and the rule and
nothing is written for it) or *accepted* (what the file holds is fine, and the features come
out in the canonical types). Never a polars, pyarrow or Rust error as the message, and never a
change to what an earlier partition stored. One world for the module; small files.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_assets.pipeline import Stage
from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.stages.harness import StageWorld

ROWS = 300
RAW_ERRORS = ("polars.exceptions", "pyarrow.lib", "PanicException", "KeyError", "Traceback")


def base() -> pl.DataFrame:
    from mlops_assets.demo.data import generate_loans

    return pl.from_pandas(generate_loans(ROWS, day=dt.date(2026, 1, 5), seed=11, id_offset=70_000_000))


def parquet(frame: pl.DataFrame | pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(frame if isinstance(frame, pa.Table) else frame.to_arrow(), buf)
    return buf.getvalue()


def csv(frame: pl.DataFrame | None = None) -> bytes:
    frame = base() if frame is None else frame
    return frame.with_columns(pl.col("applied_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv().encode()


def col(name: str, expr: pl.Expr) -> pl.DataFrame:
    return base().with_columns(expr.alias(name))


def on_row(row: int, value, name: str) -> pl.Expr:
    """`name` with row `row` (by position) replaced by `value`, as text when the value is text."""
    other = pl.col(name) if not isinstance(value, str) else pl.col(name).cast(pl.String)
    return pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(other)


def lines(data: bytes, edit: Callable[[list[bytes]], None]) -> bytes:
    parts = data.split(b"\n")
    edit(parts)
    return b"\n".join(parts)


@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    build: Callable[[], bytes]
    outcome: str                    # "quarantined", "rejected" or "accepted"
    expect: str = ""                # a substring of the reason or of the violations
    check: str = ""                 # the failing check, for "rejected"
    features: Callable[[pl.DataFrame], None] | None = None   # more about an accepted batch


def utc_timestamps(features: pl.DataFrame) -> None:
    assert features.schema["applied_at"] == pl.Datetime(features.schema["applied_at"].time_unit, "UTC")
    assert features["applied_at"].null_count() == 0


def rows(n: int) -> Callable[[pl.DataFrame], None]:
    def check(features: pl.DataFrame) -> None:
        assert features.height == n

    return check


def text_ids(features: pl.DataFrame) -> None:
    assert features.schema["loan_id"] == pl.String and features["loan_id"].str.len_chars().min() >= 19


def int64_ids(features: pl.DataFrame) -> None:
    assert features.schema["loan_id"] == pl.Int64


CASES = [
    # -- Parquet: types a producer may write ---------------------------------------------------
    Case("list_in_numeric", "parquet", lambda: parquet(col("income", pl.concat_list("income"))),
         "rejected", "column 'income': type (declared numeric, got List(Float64))", "schema"),
    Case("duration_timestamp", "parquet", lambda: parquet(col("applied_at", pl.col("applied_at") - pl.col(
        "applied_at"))), "rejected", "column 'applied_at': type (timestamp column must be a datetime, a date or "
         "ISO 8601 text, got Duration", "schema"),
    Case("time_only_timestamp", "parquet", lambda: parquet(col("applied_at", pl.col("applied_at").dt.time())),
         "rejected", "got Time)", "schema"),
    Case("epoch_timestamp", "parquet", lambda: parquet(col("applied_at", pl.col("applied_at").dt.epoch("s"))),
         "rejected", "got Int64; epoch numbers are not read (their unit is ambiguous)", "schema"),
    Case("struct_id", "parquet", lambda: parquet(col("loan_id", pl.struct("loan_id"))),
         "rejected", "column 'loan_id': type (ids must be integers or text, got Struct", "schema"),
    Case("float_id", "parquet", lambda: parquet(col("loan_id", pl.col("loan_id").cast(pl.Float64))),
         "rejected", "ids must be integers or text, got Float64; a float id is exact only up to 2**53", "schema"),
    Case("list_group", "parquet", lambda: parquet(col("gender", pl.concat_list("gender"))),
         "rejected", "column 'gender': type (the group column must hold categories", "schema"),
    Case("yes_no_labels", "parquet", lambda: parquet(col("defaulted", pl.col("defaulted").replace_strict(
        {0: "no", 1: "yes"}, return_dtype=pl.String))), "rejected",
         "column 'defaulted': type (binary labels must be 0/1 or true/false, got String values, e.g. ['no', 'yes'])",
         "target"),
    Case("megabyte_category", "parquet", lambda: parquet(col("region", on_row(3, "x" * (1 << 20), "region"))),
         "rejected", "…(1048576 chars)']; allowed", "categories"),
    Case("header_with_a_space", "parquet", lambda: parquet(base().rename({"income": "income "})),
         "rejected", "column 'income': missing column (expected by the spec; the file has 'income ': names must "
         "match exactly", "schema"),
    Case("uint64_ids_beyond_int64", "parquet", lambda: parquet(col("loan_id", pl.col("loan_id").cast(pl.UInt64)
                                                                 + pl.lit(2**63, pl.UInt64))),
         "accepted", features=text_ids),
    Case("uint32_ids", "parquet", lambda: parquet(col("loan_id", pl.col("loan_id").cast(pl.UInt32))),
         "accepted", features=int64_ids),
    Case("decimal_and_categorical_dtypes", "parquet", lambda: parquet(base().with_columns(
        pl.col("income").cast(pl.Decimal(18, 2)), pl.col("region").cast(pl.Categorical))), "accepted"),
    Case("timestamps_in_another_zone", "parquet", lambda: parquet(col(
        "applied_at", pl.col("applied_at").dt.convert_time_zone("America/New_York"))), "accepted",
         features=utc_timestamps),
    Case("timestamps_without_a_zone", "parquet", lambda: parquet(col(
        "applied_at", pl.col("applied_at").dt.replace_time_zone(None))), "accepted", features=utc_timestamps),
    Case("date_only_timestamps", "parquet", lambda: parquet(col("applied_at", pl.col("applied_at").dt.date())),
         "accepted", features=utc_timestamps),
    Case("boolean_labels", "parquet", lambda: parquet(col("defaulted", pl.col("defaulted").cast(pl.Boolean))),
         "accepted"),
    # -- CSV: encodings, separators, lines ------------------------------------------------------
    Case("utf8_byte_order_mark", "csv", lambda: b"\xef\xbb\xbf" + csv(), "accepted", features=rows(ROWS)),
    Case("crlf_and_blank_lines", "csv", lambda: lines(csv(), lambda p: p.insert(9, b"")).replace(b"\n", b"\r\n")
         + b"\r\n\r\n", "accepted", features=rows(ROWS)),
    Case("semicolons", "csv", lambda: csv().replace(b",", b";"), "quarantined",
         "the file looks ';'-separated; CSV arrivals must be comma-separated"),
    Case("tabs", "csv", lambda: csv().replace(b",", b"\t"), "quarantined", "the file looks tab-separated"),
    Case("latin1", "csv", lambda: csv(col("region", on_row(3, "nörth", "region"))).decode().encode("latin-1"),
         "quarantined", "not UTF-8 text: line 5 has the byte 0xf6"),
    Case("utf16", "csv", lambda: csv().decode().encode("utf-16"), "quarantined",
         "not UTF-8 text: it starts with a UTF-16/UTF-32 byte-order mark"),
    Case("a_line_with_too_many_fields", "csv", lambda: lines(csv(), lambda p: p.__setitem__(6, p[6] + b",x,y")),
         "quarantined", "line 7 has 20 fields, the header has 18"),
    Case("a_line_with_too_few_fields", "csv", lambda: lines(csv(), lambda p: p.__setitem__(6, p[6].rsplit(
        b",", 2)[0])), "quarantined", "line 7 has 16 fields, the header has 18"),
    Case("cut_off_mid_line", "csv", lambda: csv()[: csv().rindex(b",", 0, len(csv()) - 40)], "quarantined",
         "fields, the header has 18; every line must have one field per header column (a file cut off"),
    Case("an_empty_last_field_is_a_missing_label", "csv", lambda: lines(csv(), lambda p: p.__setitem__(
        5, p[5].rsplit(b",", 1)[0] + b",")), "rejected", "column 'defaulted': null labels (1 rows", "target"),
    Case("a_quote_never_closed", "csv", lambda: lines(csv(), lambda p: p.__setitem__(6, p[6].replace(
        b",", b',"', 1))), "quarantined", "line 7: a quoted field is never closed"),
    Case("thousands_separators", "csv", lambda: csv(col("income", pl.col("income").map_elements(
        lambda v: f"{v:,.0f}", return_dtype=pl.String))), "rejected",
         "column 'income': type (declared numeric, got String; ", "schema"),
    Case("na_in_a_numeric", "csv", lambda: csv(col("employment_years", on_row(4, "NA", "employment_years"))),
         "rejected", "1 values are not numbers, e.g. ['NA']", "schema"),
    Case("nan_in_a_bounded_numeric", "csv", lambda: csv(col("employment_years",
                                                            on_row(4, float("nan"), "employment_years"))),
         "accepted"),
    Case("header_differs_by_case", "csv", lambda: csv(base().rename({"income": "Income"})), "rejected",
         "the file has 'Income': names must match exactly, case and spaces included", "schema"),
    Case("twenty_digit_ids", "csv", lambda: csv(col("loan_id", pl.col("loan_id").cast(pl.Int128) + 2**64)),
         "accepted", features=text_ids),
    Case("true_false_labels", "csv", lambda: csv(col("defaulted", pl.col("defaulted").cast(pl.Boolean))),
         "accepted"),
    Case("naive_and_offset_timestamps", "csv", lambda: base().with_columns(pl.when(pl.col("loan_id") % 2 == 0)
         .then(pl.col("applied_at").dt.strftime("%Y-%m-%d %H:%M:%S"))
         .otherwise(pl.col("applied_at").dt.strftime("%Y-%m-%dT%H:%M:%S+02:00")).alias("applied_at"))
         .write_csv().encode(), "rejected", "they parse on their own, but a column is read in one format", "schema"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("malformed")
    home = root / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield StageWorld(root, instance, spec=small_spec(root))


@pytest.fixture(scope="module")
def good(world):
    """An earlier, good partition: its stored files must never change."""
    partition = world.land(day=1, n_rows=ROWS)
    assert world.materialize([Stage.RAW_DATA, Stage.VALIDATED_FEATURES], partition).success
    files = [Path(world.metadata(stage, partition)["uri"]) for stage in (Stage.RAW_DATA, Stage.VALIDATED_FEATURES)]
    return {path: path.read_bytes() for path in files}


def top_message(result: dg.ExecuteInProcessResult) -> str:
    error = result.get_step_failure_events()[0].event_specific_data.error
    return error.message.removeprefix("dagster._core.definitions.events.Failure: ")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_arrival(world, good, case):
    landing = Path(world.spec.source.path)
    name = f"arrival_{case.name}.{case.suffix}"
    (landing / name).write_bytes(case.build())
    world.instance.add_dynamic_partitions(world.pipeline.partitions_name, [name])
    raw = world.materialize([Stage.RAW_DATA], name, raise_on_error=False)
    store = world.resource("storage")
    if case.outcome == "quarantined":
        assert not raw.success
        message = top_message(raw)
        assert message.startswith(f"quarantined {landing / name}: arrival file") and case.expect in message, message
        assert not any(marker in message for marker in RAW_ERRORS), message
        assert (landing / "_quarantine" / name).exists() and not (landing / name).exists()
        assert world.latest(Stage.RAW_DATA, name) is None
    else:
        assert raw.success, top_message(raw)
        result = world.materialize([Stage.VALIDATED_FEATURES], name, raise_on_error=False)
        md = world.metadata(Stage.VALIDATED_FEATURES, name)
        failed = {e.check_name: e.description for e in result.get_asset_check_evaluations() if not e.passed}
        if case.outcome == "rejected":
            assert md["status"] == "rejected" and not result.success
            assert case.expect in md["violations"] and case.check in failed, md["violations"]
            assert len(md["violations"]) < 1_000      # a 1 MB value is quoted by its start
            assert not store.exists(world.pipeline.layout.features(name))
        else:
            assert result.success and md["status"] == "accepted", md.get("violations")
            if case.features is not None:
                case.features(pl.read_parquet(md["uri"]))
    assert {path: path.read_bytes() for path in good} == good


def test_accepted_partitions_of_every_timestamp_and_id_form_train_together(world, good):
    """What validation accepts, training can concatenate: timestamps are one UTC type and integer
    ids one type (text beside 20-digit ids), whichever form each file had."""
    from mlops_assets.core.training import assemble_training_frame

    store = world.resource("storage")
    paths = [world.pipeline.layout.features(f"arrival_{c.name}.{c.suffix}") for c in CASES if c.outcome == "accepted"]
    if not all(store.exists(p) for p in paths):
        pytest.skip("needs the table's accepted cases run first")
    frames = [pl.read_parquet(p) for p in good if "features" in str(p)] + [store.read_parquet(p) for p in paths]
    frame = assemble_training_frame(frames, world.spec)
    assert frame.schema["applied_at"].time_zone == "UTC" and frame.schema["loan_id"] == pl.String


# -- below the stages: what the table's stages rely on -----------------------------------------
def test_a_type_inferred_from_the_first_rows_is_read_again_from_every_row(monkeypatch):
    from mlops_assets.sources import csv_read

    monkeypatch.setattr(csv_read, "INFER_ROWS", 5)
    data = b"id,x\n" + b"".join(b"%d,1.5\n" % i for i in range(8)) + b"A-9,n/a\n"
    frame = csv_read.read_csv_bytes(data)
    assert frame.schema == pl.Schema({"id": pl.String, "x": pl.String}) and frame.height == 9


def test_validation_reports_what_used_to_crash_it(spec, loans_day1):
    from mlops_assets.core.validation import validate_batch
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    data.update(task="multiclass", target="grade", classes=None, gate={"max_fairness_gap": None,
                                                                       "min_main_metric": None})
    multiclass = PipelineSpec.from_dict(data)
    lists = loans_day1.with_columns(pl.concat_list(pl.lit(1)).alias("grade"))
    assert validate_batch(lists, multiclass).message("target") == (
        "column 'grade': type (class labels must be text or whole-number codes, got List(Int32))")
    halves = loans_day1.with_columns(pl.lit(1.5).alias("grade"))
    assert "got Float64 values such as [1.5]" in validate_batch(halves, multiclass).message("target")
    # A first timestamp polars cannot infer a format from: the rows before a readable one are named.
    stamps = loans_day1.with_columns(pl.col("applied_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    stamps = stamps.with_columns(on_row(0, "31/12/2025 noon", "applied_at").alias("applied_at"))
    assert validate_batch(stamps, spec).message("schema").startswith(
        "column 'applied_at': unparseable timestamps (1 rows, e.g. ['31/12/2025 noon']")
    # An all-null id column is null ids, not also "duplicates"; NaN is missing, not out of range.
    nulls = loans_day1.with_columns(pl.lit(None, pl.Int64).alias("loan_id"),
                                    on_row(5, float("nan"), "employment_years").alias("employment_years"))
    report = validate_batch(nulls, spec)
    assert report.message("keys") == f"column 'loan_id': null ids ({loans_day1.height} rows)"
    assert report.message("ranges") == "passed"


def test_decimal_columns_hash_the_same_every_time():
    from mlops_assets.core.features import data_hash

    def frame():
        return pl.DataFrame({"d": pl.Series([decimal.Decimal("1.25"), None])})

    assert data_hash(frame()) == data_hash(frame())


def test_serving_refuses_deep_or_huge_values_with_a_small_answer(spec):
    from mlops_assets.serving.request_schema import RequestRejected, RequestSchema, decode_json
    from mlops_assets.serving.stream_events import EventParser

    with pytest.raises(RequestRejected) as nested:
        decode_json(b"[" * 100_000 + b"]" * 100_000)
    assert nested.value.status == 400 and nested.value.errors[0].message == "not valid JSON: nested too deeply"
    row, errors = EventParser(spec).parse(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert row is None and str(errors[0]) == "field 'payload': not valid JSON (nested too deeply)"
    huge = {f.name: (1.0 if f.type == "numeric" else "x" * (1 << 20)) for f in spec.features}
    with pytest.raises(RequestRejected) as rejected:
        RequestSchema(spec).parse(huge)
    assert all(len(e.message) < 300 for e in rejected.value.errors)
    categories = [e.message for e in rejected.value.errors if e.rule == "categories"]
    assert categories and all("... (1048578 characters) is not one of" in m for m in categories)


def test_init_reads_a_sample_as_raw_data_reads_an_arrival(tmp_path):
    from mlops_assets.cli.init import read_sample

    latin = tmp_path / "loans.csv"
    latin.write_bytes(csv(col("region", on_row(3, "nörth", "region"))).decode().encode("latin-1"))
    with pytest.raises(ValueError, match=r"loans.csv is unreadable as csv: not UTF-8 text: line 5 has the byte 0xf6"):
        read_sample(latin, 100)
    blank = tmp_path / "blank.csv"
    blank.write_bytes(csv() + b"\n\n")
    frame, kind = read_sample(blank, 1_000)
    assert kind == "csv" and frame.height == ROWS and frame["loan_id"].null_count() == 0
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    with pytest.raises(ValueError, match="broken.parquet is unreadable as parquet"):
        read_sample(broken, 100)
    assert os.path.exists(broken)
