"""``FeatureEncoder.transform`` for an Arrow record batch whose text features are dictionaries.

Batch scoring reads text columns as Arrow dictionaries (Parquet stores them that way). Mapping
such a column row by row costs a string per row (polars turns it into a categorical, casts
that to text, then looks each value up); mapping its dictionary, a handful of distinct values,
with the encoder and gathering the codes by the rows' indices gives the same numbers. A float64
numeric column is copied into the matrix as it is (the encoder's cast and NaN-to-null change
nothing there: null and NaN both end as NaN). Every other column goes through the encoder.
Measured on the demo features, 1M rows in 32k-row batches: about 0.2 CPU-s through a polars
frame and the encoder, 0.05 s this way.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mlops_assets.core.features import FeatureEncoder

__all__ = ["BatchEncoder"]


class BatchEncoder:
    """Encodes record batches of one Arrow schema exactly as ``encoder.transform`` would."""

    def __init__(self, encoder: FeatureEncoder, schema):
        import pyarrow.types as pat

        self.encoder = encoder
        self.width = len(encoder.feature_names)
        self.dictionary: dict[str, tuple[int, FeatureEncoder]] = {}
        self.doubles: dict[str, int] = {}
        rest = []
        for j, name in enumerate(encoder.feature_names):
            dtype = schema.field(name).type
            if (encoder.kinds[name] == "categorical" and pat.is_dictionary(dtype)
                    and _is_text(dtype.value_type)):
                self.dictionary[name] = (j, _single(encoder, name))
            elif encoder.kinds[name] == "numeric" and pat.is_float64(dtype):
                self.doubles[name] = j
            else:
                rest.append(j)
        self.rest_positions = rest
        self._cache: dict[str, tuple] = {}
        self.rest = (FeatureEncoder(tuple(encoder.feature_names[j] for j in rest), encoder.kinds,
                                    encoder.categories) if rest else None)

    def transform(self, batch, frame: pl.DataFrame | None = None) -> np.ndarray:
        """[rows, features] float64 for one record batch; ``frame``: the batch as polars, when
        the caller has it already (only its non-dictionary feature columns are read)."""
        X = np.empty((batch.num_rows, self.width), dtype=np.float64)
        for name, j in self.doubles.items():
            # The encoder's cast + fill_nan(None) + to_numpy: NaN stays NaN, null becomes NaN.
            X[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
        if self.rest is not None:
            if frame is None:
                frame = pl.from_arrow(batch.select(list(self.rest.feature_names)))
            X[:, self.rest_positions] = self.rest.transform(frame)
        for name, (j, single) in self.dictionary.items():
            X[:, j] = self._codes(name, single, batch.column(name))
        return X

    def _codes(self, name: str, single: FeatureEncoder, column) -> np.ndarray:
        # Batches of one row group share its dictionary: encode it once (a per-call cost of
        # about 1 ms otherwise). A stale entry from another thread only fails the check.
        cached = self._cache.get(name)
        if cached is None or not cached[0].equals(column.dictionary):
            cached = (column.dictionary, _dictionary_values(column.dictionary, single))
            self._cache[name] = cached
        return _gather(cached[1], column.indices)


def _single(encoder: FeatureEncoder, name: str) -> FeatureEncoder:
    return FeatureEncoder((name,), {name: encoder.kinds[name]}, {name: encoder.categories[name]})


def _dictionary_values(dictionary, single: FeatureEncoder) -> np.ndarray:
    """The encoder's code of each dictionary value, and NaN last: the slot of null rows."""
    name = single.feature_names[0]
    codes = single.transform(pl.DataFrame({name: pl.Series(name, dictionary).cast(pl.String)}))[:, 0]
    return np.append(codes, np.nan)


def _gather(codes: np.ndarray, indices) -> np.ndarray:
    """Each row's code by its dictionary index; a null row (a null index) is missing, NaN, as
    the encoder has it."""
    import pyarrow.compute as pc

    if indices.null_count:
        indices = pc.fill_null(indices, len(codes) - 1)
    return codes[indices.to_numpy(zero_copy_only=False)]


def _is_text(dtype) -> bool:
    import pyarrow.types as pat

    return pat.is_string(dtype) or pat.is_large_string(dtype) or pat.is_string_view(dtype)
