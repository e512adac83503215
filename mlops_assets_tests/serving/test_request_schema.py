"""Request validation from the spec: every rule, named by field, row and rule."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from mlops_assets.serving.request_schema import RequestRejected, RequestSchema
from mlops_assets_tests.serving.serving_models import loan_rows, request_rows, served_spec


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return served_spec(tmp_path_factory.mktemp("schema"))


@pytest.fixture(scope="module")
def good_row(spec):
    row = request_rows(spec, loan_rows(20))[0]
    assert row["employment_years"] is not None
    return row


def rejection(schema: RequestSchema, payload) -> RequestRejected:
    with pytest.raises(RequestRejected) as caught:
        schema.parse(payload)
    return caught.value


def rules(exc: RequestRejected) -> set[tuple]:
    return {(e.row, e.field, e.rule) for e in exc.errors}


def test_single_row_and_batch_parse_to_spec_ordered_values(spec, good_row):
    schema = RequestSchema(spec)
    single = schema.parse(dict(good_row))
    assert not single.batch and len(single) == 1
    assert single.ids == [good_row["loan_id"]]
    assert single.values[0] == tuple(
        float(good_row[f.name]) if f.type == "numeric" else good_row[f.name] for f in spec.features)
    batch = schema.parse({"rows": [good_row, {**good_row, "loan_id": "abc"}]})
    assert batch.batch and len(batch) == 2 and batch.ids == [good_row["loan_id"], "abc"]


def test_id_and_context_columns_are_optional(spec, good_row):
    schema = RequestSchema(spec)
    row = {k: v for k, v in good_row.items() if k != "loan_id"}
    parsed = schema.parse(row)
    assert parsed.ids == [None] and parsed.timestamps == [None] and parsed.groups == [None]
    parsed = schema.parse({**row, "applied_at": "2026-02-01T10:00:00", "gender": "female"})
    assert parsed.timestamps == [dt.datetime(2026, 2, 1, 10, tzinfo=dt.UTC)]
    assert parsed.groups == ["female"]


@pytest.mark.parametrize("field, value, rule", [
    ("age", 17, "min"),
    ("credit_score", 851.5, "max"),
    ("age", "41", "type"),
    ("age", True, "type"),
    ("income", math.inf, "finite"),
    ("income", 10**400, "finite"),
    ("income", None, "not_null"),
    ("income", math.nan, "not_null"),
    ("purpose", "yacht", "categories"),
    ("purpose", 3, "categories"),      # an integer code, matched by value: not one of them here
    ("purpose", 3.5, "type"),
    ("purpose", True, "type"),
    ("purpose", None, "not_null"),
    ("loan_id", 1.5, "type"),
    ("applied_at", "yesterday", "iso_datetime"),
    ("gender", ["x"], "type"),
])
def test_each_broken_rule_is_named(spec, good_row, field, value, rule):
    exc = rejection(RequestSchema(spec), {**good_row, field: value})
    assert exc.status == 422
    assert rules(exc) == {(None, field, rule)}
    assert field in str(exc)


def test_nulls_only_where_the_spec_allows_them(spec, good_row):
    schema = RequestSchema(spec)
    nullable = [f.name for f in spec.features if f.max_null_fraction > 0]
    assert nullable == ["employment_years", "debt_to_income"]
    parsed = schema.parse({**good_row, "employment_years": None, "debt_to_income": math.nan})
    index = spec.feature_names.index("employment_years")
    assert parsed.values[0][index] is None


def test_unseen_category_is_valid_only_without_declared_categories(spec, good_row):
    schema = RequestSchema(spec)
    region = spec.feature_names.index("region")
    assert schema.parse({**good_row, "region": "atlantis"}).values[0][region] == "atlantis"
    assert rules(rejection(schema, {**good_row, "home_ownership": "atlantis"})) == {
        (None, "home_ownership", "categories")}


def test_missing_and_unknown_fields(spec, good_row):
    row = {k: v for k, v in good_row.items() if k != "income"}
    row["incme"] = 1.0
    exc = rejection(RequestSchema(spec), row)
    assert rules(exc) == {(None, "income", "required"), (None, "incme", "unknown_field")}
    assert "allowed fields" in next(e.message for e in exc.errors if e.rule == "unknown_field")


def test_batch_errors_name_the_row(spec, good_row):
    rows = [good_row, {**good_row, "age": 5}, "not a row", {**good_row, "purpose": None}]
    exc = rejection(RequestSchema(spec), {"rows": rows})
    assert rules(exc) == {(1, "age", "min"), (2, "row", "type"), (3, "purpose", "not_null")}
    assert [e["loc"] for e in exc.to_dict()["detail"]] == [["rows", 1, "age"], ["rows", 2], ["rows", 3, "purpose"]]
    assert "rows[2]: a row must be a JSON object, got a string" in str(exc)


def test_batch_size_and_body_shape(spec, good_row):
    schema = RequestSchema(spec, max_batch_rows=3)
    schema.parse({"rows": [good_row] * 3})
    too_many = rejection(schema, {"rows": [good_row] * 4})
    assert too_many.status == 413 and rules(too_many) == {(None, "rows", "max_batch_rows")}
    assert rules(rejection(schema, {"rows": []})) == {(None, "rows", "min_rows")}
    assert rules(rejection(schema, [good_row])) == {(None, "body", "type")}
    with pytest.raises(ValueError, match="max_batch_rows"):
        RequestSchema(spec, max_batch_rows=0)


def test_error_list_is_capped_but_counted(spec, good_row):
    exc = rejection(RequestSchema(spec), {"rows": [{**good_row, "age": 1}] * 80})
    assert len(exc.errors) == 50 and exc.to_dict()["more_errors"] == 30
