"""Per-event validation and the consumer's argument checks: pure, no broker."""

from __future__ import annotations

import json

import polars as pl
import pytest

from mlops_assets.serving.broker import Message, connect_broker
from mlops_assets.serving.stream import StreamConsumer
from mlops_assets.serving.stream_events import EventParser, reason
from mlops_assets.serving.stream_output import batch_key
from mlops_assets_tests.conftest import small_spec


@pytest.fixture
def parser(tmp_path):
    return EventParser(small_spec(tmp_path))


def event(**changes) -> bytes:
    base = {"loan_id": 7, "age": 40, "income": 52_000.0, "employment_years": 3.5, "credit_score": 700,
            "loan_amount": 9_000, "term_months": 36, "interest_rate": 9.5, "debt_to_income": 12.0,
            "num_open_accounts": 4, "delinquencies_2y": 0, "purpose": "car", "home_ownership": "RENT",
            "region": "north", "gender": "female", "applied_at": "2026-02-01T10:00:00"}
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_a_valid_event_becomes_a_canonical_row(parser):
    row, errors = parser.parse(event())
    assert errors == []
    assert row["age"] == 40.0 and isinstance(row["age"], float)      # numerics as floats
    assert row["purpose"] == "car" and "gender" not in row          # only the id and features


def test_every_broken_rule_is_reported_with_its_field(parser):
    row, errors = parser.parse(event(loan_id=..., age=-3, region="mars", term_months="36"))
    assert row is None
    assert reason(errors) == (
        "field 'loan_id': required (the spec's id_column); "
        "field 'age': range (-3 below min 18.0); "
        "field 'term_months': type (declared numeric, got str '36'); "
        "field 'region': unknown category ('mars' not in ['north', 'south', 'east', 'west'])")


@pytest.mark.parametrize(("changes", "expected"), [
    ({"employment_years": None}, None),                   # max_null_fraction 0.05: null allowed
    ({"employment_years": float("nan")}, None),           # NaN means missing, like null
    ({"income": None}, "field 'income': null not allowed (max_null_fraction is 0)"),
    ({"age": True}, "field 'age': type (declared numeric, got bool True)"),
    ({"purpose": 3}, "field 'purpose': unknown category ('3' not in"),
    ({"purpose": ["car"]}, "field 'purpose': type (declared categorical, got list)"),
    ({"loan_id": ""}, "field 'loan_id': must be an integer or a non-empty string (got '')"),
    ({"loan_id": 1.5}, "field 'loan_id': must be an integer or a non-empty string (got 1.5)"),
])
def test_nulls_types_and_ids(parser, changes, expected):
    row, errors = parser.parse(event(**changes))
    if expected is None:
        assert errors == [] and all(row[k] is None for k in changes)
    else:
        assert reason(errors).startswith(expected)


@pytest.mark.parametrize(("payload", "expected"), [
    (None, "field 'payload': entry deleted from the stream before it was scored"),
    (b"", "field 'payload': empty (expected a JSON object in the entry's 'data' field)"),
    (b"\xff\xfe", "field 'payload': not valid JSON"),
    (b'"text"', "field 'payload': must be a JSON object (got str)"),
])
def test_unusable_payloads(parser, payload, expected):
    row, errors = parser.parse(payload)
    assert row is None and reason(errors).startswith(expected)


def test_frame_types_follow_the_spec_and_the_ids(parser):
    rows = [parser.parse(event(loan_id=i))[0] for i in (1, 2)]
    frame = parser.frame(rows)
    assert frame.schema["loan_id"] == pl.Int64 and frame.schema["age"] == pl.Float64
    assert frame.schema["purpose"] == pl.String
    mixed = parser.frame(rows + [parser.parse(event(loan_id="L-3"))[0]])
    assert mixed["loan_id"].to_list() == ["1", "2", "L-3"]          # mixed id types: all strings


def test_batch_key_is_first_and_last_message_id():
    messages = [Message("1700000000000-0", b"{}", 1_700_000_000_000),
                Message("1700000000001-5", b"{}", 1_700_000_000_001)]
    assert batch_key(messages) == "1700000000000-0_1700000000001-5"
    assert batch_key([Message("p3/offset:12", b"{}", 0)]) == "p3-offset-12_p3-offset-12"   # file-safe


@pytest.mark.parametrize(("option", "value", "message"), [
    ("batch_size", 0, "batch_size: must be a number >= 1, got 0"),
    ("batch_size", 2.5, "batch_size: must be a number >= 1, got 2.5"),
    ("max_wait_ms", 0, "max_wait_ms: must be a number >= 1, got 0"),
    ("max_wait_ms", 30_001, "max_wait_ms: must be at most 30000 (the broker's socket timeout is twice that), got 30001"),
    ("champion_check_seconds", 0, "champion_check_seconds: must be a number > 0, got 0"),
    ("claim_idle_seconds", "soon", "claim_idle_seconds: must be a number > 0, got 'soon'"),
])
def test_consumer_arguments_are_checked(tmp_path, option, value, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        StreamConsumer(small_spec(tmp_path), None, None, output_dir=tmp_path, **{option: value})


def test_unknown_broker_url_names_the_field():
    with pytest.raises(ValueError, match="broker_url: unsupported scheme 'kafka'"):
        connect_broker("kafka://127.0.0.1:9092")
