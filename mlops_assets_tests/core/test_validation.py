import polars as pl

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
