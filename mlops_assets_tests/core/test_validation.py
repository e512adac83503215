import polars as pl
import pytest

from mlops_assets.core.validation import CHECK_NAMES, validate_batch


def test_clean_batch_passes(spec, loans_day1):
    report = validate_batch(loans_day1, spec)
    assert report.passed, report.message()
    assert report.labelled and report.n_rows == loans_day1.height


def test_missing_column_and_wrong_type_name_the_column(spec, loans_day1):
    bad = loans_day1.drop("income").with_columns(pl.col("credit_score").cast(pl.String))
    report = validate_batch(bad, spec)
    schema = report.message("schema")
    assert "column 'income': missing column" in schema
    assert "column 'credit_score': type" in schema and "declared numeric" in schema


def test_each_rule_reports_its_column(spec, loans_day1):
    bad = loans_day1.with_columns(
        pl.when(pl.col("loan_id") % 50 == 0).then(None).otherwise(pl.col("income")).alias("income"),
        pl.when(pl.col("loan_id") == 3).then(-5.0).otherwise(pl.col("age")).alias("age"),
        pl.when(pl.col("loan_id") == 4).then(pl.lit("crypto")).otherwise(pl.col("purpose")).alias("purpose"),
    )
    bad = pl.concat([bad, bad.head(2)])          # duplicate ids
    report = validate_batch(bad, spec)
    assert "column 'income': too many nulls" in report.message("nulls")
    assert "column 'age': out of range" in report.message("ranges") and "below min 18" in report.message("ranges")
    assert "column 'purpose': unknown categories" in report.message("categories") and "crypto" in report.message("categories")
    assert "column 'loan_id': duplicate ids" in report.message("keys")
    assert {v.check for v in report.violations} <= set(CHECK_NAMES)


def test_row_count_and_labels(spec, loans_day1):
    small = loans_day1.head(50)
    assert "too few rows" in validate_batch(small, spec).message("row_count")
    nan_labels = loans_day1.with_columns(
        pl.when(pl.col("loan_id") < 5).then(None).otherwise(pl.col("defaulted")).alias("defaulted")
    )
    assert "column 'defaulted': null labels" in validate_batch(nan_labels, spec).message("target")
    twos = loans_day1.with_columns(pl.lit(2).alias("defaulted"))
    assert "labels not 0/1" in validate_batch(twos, spec).message("target")


def test_unlabelled_batch_is_valid_for_scoring(spec, loans_day1):
    report = validate_batch(loans_day1.drop("defaulted"), spec)
    assert report.passed and not report.labelled


REGIONS = {"north": 1, "south": 2, "east": 3, "west": 4}


def _coded_spec(spec, **overrides):
    """The demo spec with region declared as the integer codes 1-4 (as a YAML file can write them)."""
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    for feat in data["features"]:
        if feat["name"] == "region":
            feat["categories"] = [1, 2, 3, 4]
    data.update(overrides)
    return PipelineSpec.from_dict(data)


def _region_codes(df: pl.DataFrame, dtype) -> pl.DataFrame:
    return df.with_columns(pl.col("region").replace_strict(REGIONS, return_dtype=pl.Int64).cast(dtype))


def test_timestamps_that_do_not_parse_fail_the_schema_check_and_never_crash(spec, loans_day1):
    from mlops_assets.core.features import prepare_features

    text = loans_day1.with_columns(pl.col("applied_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert validate_batch(text, spec).passed                  # ISO text parses
    bad = text.with_columns(
        pl.when(pl.col("loan_id").is_in([3, 9])).then(pl.lit("31/12/2025 noon")).otherwise(pl.col("applied_at"))
        .alias("applied_at"))
    report = validate_batch(bad, spec)
    assert report.message("schema") == ("column 'applied_at': unparseable timestamps (2 rows, e.g. ['31/12/2025 noon']; "
                                        "expected ISO 8601 such as 2026-01-31T08:00:00Z)")
    assert [v.check for v in report.violations] == ["schema"]
    with pytest.raises(ValueError, match=r"column 'applied_at': unparseable timestamps \(2 rows"):
        prepare_features(bad, spec)                           # a clear error even when called unvalidated


@pytest.mark.parametrize("dtype", [pl.Int64, pl.Float64, pl.String])
def test_numeric_coded_categories_match_by_value(spec, loans_day1, dtype):
    coded = _coded_spec(spec)
    assert coded.feature_types["region"] == "categorical" and coded.features[12].categories == ["1", "2", "3", "4"]
    report = validate_batch(_region_codes(loans_day1, dtype), coded)
    assert report.passed, report.message()


def test_an_unknown_float_code_is_named_in_its_canonical_form(spec, loans_day1):
    coded = _coded_spec(spec)
    data = _region_codes(loans_day1, pl.Float64).with_columns(
        pl.when(pl.col("loan_id") == 5).then(7.0).otherwise(pl.col("region")).alias("region"))
    assert validate_batch(data, coded).message("categories") == (
        "column 'region': unknown categories (1 rows, e.g. ['7']; allowed ['1', '2', '3', '4'])")


def test_fractional_codes_are_a_type_error(spec, loans_day1):
    data = _region_codes(loans_day1, pl.Float64).with_columns(
        pl.when(pl.col("loan_id") == 5).then(2.5).otherwise(pl.col("region")).alias("region"))
    report = validate_batch(data, _coded_spec(spec))
    assert report.message("schema") == ("column 'region': type (declared categorical, got Float64 values that are "
                                        "not whole-number codes, e.g. [2.5])")
    assert report.message("categories") == "passed"            # no second message for the same column


def test_float_coded_class_labels_match_integer_classes(spec, loans_day1):
    grades = {"A": 1, "B": 2, "C": 3, "D": 4}
    features = [f.model_dump(mode="json") for f in spec.features]
    coded = _coded_spec(spec, task="multiclass", target="grade", classes=[1, 2, 3, 4],
                        gate={"max_fairness_gap": None, "min_main_metric": None})
    assert coded.classes == [1, 2, 3, 4] and [f.model_dump(mode="json") for f in coded.features][:10] == features[:10]
    floats = loans_day1.with_columns(pl.col("grade").replace_strict(grades, return_dtype=pl.Float64))
    assert validate_batch(floats, coded).message("target") == "passed"
    odd = floats.with_columns(pl.when(pl.col("loan_id") == 1).then(5.0).otherwise(pl.col("grade")).alias("grade"))
    assert validate_batch(odd, coded).message("target") == (
        "column 'grade': unknown classes (1 rows, e.g. ['5']; classes ['1', '2', '3', '4'])")


def test_a_duplicated_csv_header_is_a_schema_failure(spec, loans_day1, tmp_path):
    path = tmp_path / "day.csv"
    loans_day1.head(300).with_columns(pl.col("applied_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(path)
    lines = path.read_text().splitlines()
    # A second "age" column, as a hand-edited export may have: polars renames it silently.
    path.write_text("\n".join([lines[0] + ",age"] + [line + ",33" for line in lines[1:]]) + "\n")
    raw = pl.read_csv(path)
    assert "age_duplicated_0" in raw.columns
    report = validate_batch(raw, spec)
    assert report.message("schema") == ("column 'age': duplicated column (the file's header names 'age' 2 times "
                                        "(read as ['age', 'age_duplicated_0']); which one holds the data is ambiguous)")
    assert report.message("ranges") == "passed"   # rules on an ambiguous column would only add noise


def test_empty_and_header_only_batches_say_so_first(spec, loans_day1, tmp_path):
    path = tmp_path / "header.csv"
    loans_day1.head(0).write_csv(path)
    header_only = pl.read_csv(path)
    assert set(header_only.schema.values()) == {pl.String}       # what polars makes of a bare header
    report = validate_batch(header_only, spec)
    assert report.message() == "batch: the batch has no rows (header only: 18 columns; min_rows is 200)"
    nothing = validate_batch(pl.DataFrame(), spec)
    assert str(nothing.violations[0]) == "batch: the batch has no rows (no columns either; min_rows is 200)"
    assert nothing.violations[1].rule == "missing column"        # what the file lacks comes after


def test_an_all_null_column_is_a_nulls_failure_not_a_type_error(spec, loans_day1):
    data = loans_day1.with_columns(pl.lit(None).alias("income"))   # dtype Null, as an all-null Parquet column
    report = validate_batch(data, spec)
    assert report.message("schema") == "passed"
    assert report.message("nulls") == "column 'income': too many nulls (100.00% missing > max_null_fraction 0.00%)"


def test_numeric_rules_count_nan_as_missing_and_name_infinite_and_out_of_range_values(spec, loans_day1):
    """The one-pass counts (`_feature_counts`) and the per-rule examples agree: NaN is missing,
    infinities and both range bounds are reported with examples; a clean column says nothing."""
    bad = loans_day1.with_columns(
        pl.when(pl.col("loan_id") % 10 == 0).then(float("nan")).otherwise(pl.col("debt_to_income"))
        .alias("debt_to_income"),
        pl.when(pl.col("loan_id") == 7).then(float("inf")).otherwise(pl.col("income")).alias("income"),
        pl.when(pl.col("loan_id") == 8).then(901.0).otherwise(pl.col("credit_score")).alias("credit_score"),
        pl.when(pl.col("loan_id") == 9).then(-1).otherwise(pl.col("term_months")).alias("term_months"),
    )
    report = validate_batch(bad, spec)
    nulls, ranges = report.message("nulls"), report.message("ranges")
    assert "column 'debt_to_income': too many nulls" in nulls and "max_null_fraction 5.00%" in nulls
    assert "column 'income': infinite values" in ranges and "1 rows" in ranges
    assert "column 'credit_score': out of range" in ranges and "above max 850" in ranges and "901.0" in ranges
    assert "column 'term_months': out of range" in ranges and "below min 12" in ranges
    assert {v.column for v in report.violations} == {"debt_to_income", "income", "credit_score", "term_months"}
