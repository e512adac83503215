import numpy as np
import polars as pl

from mlops_assets.core.features import (
    FeatureEncoder,
    assign_split,
    data_hash,
    prepare_features,
    stable_unit_hash,
)


def test_split_is_deterministic_and_row_stable(spec, loans_day1):
    ids = loans_day1["loan_id"]
    a = assign_split(ids, spec)
    # The same id lands on the same side whatever else is in the batch.
    b = assign_split(ids.slice(100, 500), spec)
    assert (a.slice(100, 500) == b).all()
    shares = a.value_counts(normalize=True).sort("_split")
    holdout = shares.filter(pl.col("_split") == "holdout")["proportion"][0]
    assert abs(holdout - spec.split.holdout_fraction) < 0.03


def test_split_labels_are_the_original_rule(spec):
    """assign_split builds its labels by code; they are exactly the original np.where strings."""
    ids = pl.Series("loan_id", np.arange(-5_000, 200_000, 7, dtype=np.int64))
    u = stable_unit_hash(ids, spec.split.seed)
    hold, valid = spec.split.holdout_fraction, spec.split.validation_fraction
    expected = pl.Series("_split", np.where(u < hold, "holdout", np.where(u < hold + valid, "valid", "train")),
                         dtype=pl.String)
    got = assign_split(ids, spec)
    assert got.dtype == pl.String and got.name == "_split"
    assert got.equals(expected)
    assert assign_split(ids.head(0), spec).equals(expected.head(0))
    text_ids = pl.Series("loan_id", [f"c-{i}" for i in range(2_000)])
    u = stable_unit_hash(text_ids, spec.split.seed)
    assert assign_split(text_ids, spec).to_list() == np.where(
        u < hold, "holdout", np.where(u < hold + valid, "valid", "train")).tolist()


def test_string_ids_hash_stably():
    ids = pl.Series(["a", "b", "c"])
    assert np.array_equal(stable_unit_hash(ids, 1), stable_unit_hash(ids, 1))
    assert not np.array_equal(stable_unit_hash(ids, 1), stable_unit_hash(ids, 2))
    # Pinned values: a library upgrade must never move rows between train and holdout.
    assert float(stable_unit_hash(pl.Series([12345]), 17)[0]) == 0.2624909471040916
    assert float(stable_unit_hash(pl.Series(["abc"]), 17)[0]) == 0.6716213941844507


def test_prepare_and_encode(spec, loans_day1):
    prepared = prepare_features(loans_day1, spec)
    assert prepared.columns[0] == "loan_id" and "_split" in prepared.columns
    encoder = FeatureEncoder.fit(prepared, spec)
    X = encoder.transform(prepared)
    assert X.shape == (prepared.height, len(spec.feature_names)) and X.dtype == np.float64
    purpose_col = spec.feature_names.index("purpose")
    assert set(np.unique(X[:, purpose_col])) <= set(range(6))
    unseen = prepared.head(3).with_columns(pl.lit("crypto").alias("purpose"))
    assert np.isnan(encoder.transform(unseen)[:, purpose_col]).all()
    assert FeatureEncoder.from_dict(encoder.to_dict()) == encoder


def test_data_hash_is_content_sensitive(loans_day1):
    assert data_hash(loans_day1) == data_hash(loans_day1.clone())
    changed = loans_day1.with_columns(pl.when(pl.col("loan_id") == 7).then(1.0).otherwise(pl.col("age")).alias("age"))
    assert data_hash(changed) != data_hash(loans_day1)


def test_canonical_strings_match_numeric_codes_by_value():
    from mlops_assets.core.features import canonical_series

    floats = pl.Series("c", [3.0, 2.5, None, float("nan"), -0.0, 1e300, float("inf")])
    assert canonical_series(floats).to_list() == ["3", "2.5", None, None, "0", "1e+300", "inf"]
    assert canonical_series(pl.Series("c", [3, None])).to_list() == ["3", None]
    assert canonical_series(pl.Series("c", ["3", "3.0", " 3"])).to_list() == ["3", "3.0", " 3"]   # text as written
    assert canonical_series(pl.Series("c", [True, False])).to_list() == ["true", "false"]


def _old_transform(encoder: FeatureEncoder, df: pl.DataFrame) -> np.ndarray:
    """FeatureEncoder.transform before numeric codes were matched by value (the frozen reference)."""
    exprs = []
    for name in encoder.feature_names:
        if encoder.kinds[name] == "numeric":
            exprs.append(pl.col(name).cast(pl.Float64).fill_nan(None))
        else:
            mapping = {v: float(i) for i, v in enumerate(encoder.categories[name])}
            exprs.append(pl.col(name).cast(pl.String).replace_strict(mapping, default=None, return_dtype=pl.Float64))
    return df.select(exprs).to_numpy(order="c").astype(np.float64, copy=False)


def test_string_categories_encode_bit_identically_to_before(spec, loans_day1):
    raw = loans_day1.with_columns(   # some unseen and missing categories too
        pl.when(pl.col("loan_id") % 7 == 0).then(pl.lit("crypto")).otherwise(pl.col("purpose")).alias("purpose"),
        pl.when(pl.col("loan_id") % 11 == 0).then(None).otherwise(pl.col("region")).alias("region"),
    )
    encoder = FeatureEncoder.fit(prepare_features(loans_day1, spec), spec)
    for frame in (raw, prepare_features(raw, spec)):
        new, old = encoder.transform(frame), _old_transform(encoder, frame)
        assert new.tobytes() == old.tobytes()


def _coded(spec, categories):
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    data["features"] = [{**f, "categories": categories} if f["name"] == "region" else f for f in data["features"]]
    return PipelineSpec.from_dict(data)


REGIONS = {"north": 1, "south": 2, "east": 3, "west": 4}


def test_numeric_codes_encode_the_same_as_int_float_or_text(spec, loans_day1):
    """The model trains on prepared frames and the scorer encodes raw ones: both must agree."""
    coded_int = loans_day1.with_columns(pl.col("region").replace_strict(REGIONS, return_dtype=pl.Int64))
    frames = {dtype: coded_int.with_columns(pl.col("region").cast(dtype)) for dtype in (pl.Int64, pl.Float64, pl.String)}
    for categories in ([1, 2, 3, 4], None):          # declared codes, and a vocabulary learnt from the data
        s = _coded(spec, categories)
        prepared = {dtype: prepare_features(f, s) for dtype, f in frames.items()}
        assert prepared[pl.Float64]["region"].to_list() == prepared[pl.Int64]["region"].to_list()
        assert set(prepared[pl.Float64]["region"].unique()) == {"1", "2", "3", "4"}
        encoder = FeatureEncoder.fit(prepared[pl.Float64], s)
        assert encoder.categories["region"] == ("1", "2", "3", "4")
        assert FeatureEncoder.fit(frames[pl.Float64], s) == encoder          # fitting on a raw frame too
        reference = encoder.transform(prepared[pl.Int64])
        assert not np.isnan(reference[:, s.feature_names.index("region")]).any()
        for frame in (*frames.values(), *prepared.values()):
            assert encoder.transform(frame).tobytes() == reference.tobytes()


def test_float_coded_labels_encode_like_integer_classes(spec):
    from mlops_assets.core.features import encode_target
    from mlops_assets.spec import PipelineSpec

    data = spec.model_dump(mode="json")
    data.update(task="multiclass", target="grade", classes=[1, 2, 3], gate={"max_fairness_gap": None})
    s = PipelineSpec.from_dict(data)
    for labels in (pl.Series([3.0, 1.0, 2.0, 4.0]), pl.Series([3, 1, 2, 4]), pl.Series(["3", "1", "2", "4"])):
        assert np.array_equal(encode_target(labels, s), [2.0, 0.0, 1.0, np.nan], equal_nan=True)


def test_string_timestamps_are_parsed_to_utc(spec, loans_day1):
    text = loans_day1.head(3).with_columns(pl.Series("applied_at", ["2026-01-01T08:00:00Z", "2026-01-01T10:00:00+02:00",
                                                                    "2026-01-01T03:00:00-05:00"]))
    out = prepare_features(text, spec)["applied_at"]
    assert out.dtype == pl.Datetime("us", "UTC")
    assert [t.hour for t in out.to_list()] == [8, 8, 8]
