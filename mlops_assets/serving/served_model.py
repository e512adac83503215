"""One model version ready to serve: validated rows -> the bundle's matrix -> score columns.

The batch path (`ModelBundle.score_frame`) builds a polars frame per call, which costs far
more than scoring one row. Here rows go straight to the float64 matrix the bundle's
`FeatureEncoder` would produce (numerics as floats, categoricals as their vocabulary index,
missing and unseen values as NaN), and the score columns are built with numpy in the same
contract as `core.predictions.prediction_columns`. `prepare` proves on the bundle's own
reference rows that this fast path gives the encoder's matrix bit for bit before the
version is ever served.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_assets.core.predictions import PREDICTION, PROBA_PREFIX, SCORE, class_names
from mlops_assets.serving.request_schema import ParsedRequest
from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_assets.core.bundle import ModelBundle

SMOKE_ROWS = 64


class ModelNotServable(RuntimeError):
    """A bundle that does not fit the spec, or fails its smoke test; the message says why."""


@dataclass
class ServedModel:
    version: str
    bundle: ModelBundle
    scorer: Any                                   # core.scoring.OnnxScorer
    # Per encoder column, in the encoder's order: (index into a parsed row, vocabulary or None).
    plan: tuple[tuple[int, dict[str, float] | None], ...]
    task: str
    threshold: float
    labels: list[str] = field(default_factory=list)      # multiclass labels in score order
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @classmethod
    def prepare(cls, version: str, bundle: ModelBundle, spec: PipelineSpec, *,
                onnx_threads: int | None = None) -> ServedModel:
        """Check the bundle against the spec, open its ONNX session and smoke-test it.

        `onnx_threads=None` opens the session exactly as batch scoring does, so a request's
        scores equal `score_frame`'s on the same rows bit for bit. (onnxruntime's tree
        ensemble sums in another order for other batch sizes and thread counts: the same row
        can differ in the last bit, about 2e-16, between a 1-row and a 300-row call.)"""
        from mlops_assets.core.scoring import OnnxScorer, OnnxValidationError, smoke_test

        where = f"{spec.name} v{version}"
        if bundle.task != spec.task:
            raise ModelNotServable(
                f"{where}: the bundle is a {bundle.task} model but the spec's task is {spec.task}")
        encoder = bundle.encoder
        spec_index = {name: i for i, name in enumerate(spec.feature_names)}
        kinds = spec.feature_types
        plan = []
        for name in encoder.feature_names:
            if name not in spec_index:
                raise ModelNotServable(
                    f"{where}: the bundle needs feature '{name}', which the spec does not declare")
            if encoder.kinds[name] != kinds[name]:
                raise ModelNotServable(f"{where}: feature '{name}' is {encoder.kinds[name]} in the bundle but "
                                       f"{kinds[name]} in the spec")
            vocabulary = None
            if encoder.kinds[name] == "categorical":
                vocabulary = {value: float(i) for i, value in enumerate(encoder.categories[name])}
            plan.append((spec_index[name], vocabulary))
        try:
            smoke_test(bundle.onnx_bytes, len(encoder.feature_names))
            scorer = OnnxScorer(bundle.onnx_bytes, threads=onnx_threads)
        except OnnxValidationError as exc:
            raise ModelNotServable(f"{where}: {exc}") from exc
        model = cls(version=str(version), bundle=bundle, scorer=scorer, plan=tuple(plan), task=bundle.task,
                    threshold=bundle.threshold, labels=[])
        if bundle.task == "multiclass":
            width = int(np.asarray(scorer.predict(np.zeros((1, len(plan))))).shape[1])
            model.labels = class_names(bundle.classes, width)
        model._check_fast_path(spec)
        return model

    def _check_fast_path(self, spec: PipelineSpec) -> None:
        """The fast encoder must give exactly the bundle encoder's matrix on real rows."""
        sample = self.bundle.reference_sample
        if sample is None or sample.height == 0 or not set(spec.feature_names) <= set(sample.columns):
            return  # bundles saved without a sample: the ONNX smoke test above still ran
        sample = sample.head(SMOKE_ROWS).select(spec.feature_names)
        expected = self.bundle.encoder.transform(sample)
        rows = [tuple(_plain(v) for v in row) for row in sample.iter_rows()]
        actual = self.encode(rows)
        if not np.array_equal(expected, actual, equal_nan=True):
            raise ModelNotServable(f"{spec.name} v{self.version}: the serving encoder disagrees with the "
                                   "bundle's encoder on its reference rows")
        scores = np.asarray(self.scorer.predict(actual))
        if not np.isfinite(scores).all():
            raise ModelNotServable(f"{spec.name} v{self.version}: non-finite scores on its reference rows")

    # -- the request path ------------------------------------------------------------------
    def encode(self, rows: list[tuple]) -> np.ndarray:
        nan = math.nan
        flat: list[float] = []
        append = flat.append
        for row in rows:
            for index, vocabulary in self.plan:
                value = row[index]
                if vocabulary is None:
                    append(nan if value is None else value)
                else:
                    append(vocabulary.get(value, nan))    # unseen or missing -> NaN, like the encoder
        return np.array(flat, dtype=np.float64).reshape(len(rows), len(self.plan))

    def score(self, rows: list[tuple]) -> dict[str, list]:
        """Score columns for the rows, in `prediction_columns`' contract (as plain lists)."""
        raw = np.asarray(self.scorer.predict(self.encode(rows)))
        if self.task == "binary":
            return {SCORE: raw.tolist(), PREDICTION: (raw >= self.threshold).astype(np.int64).tolist()}
        if self.task == "multiclass":
            labels = self.labels
            columns: dict[str, list] = {PREDICTION: [labels[i] for i in np.argmax(raw, axis=1).tolist()]}
            for i, label in enumerate(labels):
                columns[f"{PROBA_PREFIX}{label}"] = raw[:, i].tolist()
            return columns
        return {PREDICTION: raw.tolist()}

    def response_rows(self, parsed: ParsedRequest, columns: dict[str, list], id_column: str) -> list[dict]:
        names = list(columns)
        series = [columns[n] for n in names]
        out = []
        for i, row_id in enumerate(parsed.ids):
            row = {id_column: row_id} if row_id is not None else {}
            for name, values in zip(names, series):
                row[name] = values[i]
            out.append(row)
        return out


def _plain(value: Any) -> Any:
    """A polars cell as the request schema hands it over: NaN is missing."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
