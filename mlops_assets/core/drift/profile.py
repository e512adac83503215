"""Column and dataset profiles: the compact, JSON-serialisable summaries that drift is computed on.

A *reference* profile is built once (at training time) from the full training features. A
*current* profile is built from new data in one streaming pass and is binned on the reference's
edges and categories, so every statistic of :mod:`.stats` can be computed from the two profiles
alone, without the raw data.

Numeric sketch
--------------
The reference defines ``edges``: up to ``sketch_size + 1`` of its own values, taken at evenly
spaced ranks (so every interval holds about ``1/sketch_size`` of the reference), or *all* its
distinct values when it has no more than that (then the reference is stored exactly). Any data
set, reference or current, is summarised on those edges by three arrays:

* ``point_counts[k]``: values equal to ``edges[k]``;
* ``gap_counts[k]``: values strictly inside gap ``k``; gap 0 is ``(-inf, edges[0])``, gap ``k``
  is ``(edges[k-1], edges[k])`` and the last gap is ``(edges[-1], +inf)``;
* ``gap_sums[k]``: the sum of ``x - anchor`` over the values of gap ``k``, where the anchor is
  ``edges[0]`` for gap 0 and ``edges[k-1]`` otherwise (offsets keep the sums well conditioned).

Counts and sums simply add up across chunks, so the sketch of a data set processed in any number
of chunks equals the sketch of the whole (up to floating-point summation order). From it the
empirical CDF is known exactly at every edge, and the integral of the CDF over every gap is known
exactly (``gap_sums``), which makes the Wasserstein distance exact except inside gaps where the
two CDFs cross, and the KS statistic exact whenever the reference is stored exactly (small
references, which is where Evidently uses KS) and within ``1/sketch_size`` otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

PROFILE_FORMAT_VERSION = 1
OTHER_CATEGORY = "__other__"


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64)]


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values, dtype=np.int64)]


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


class _Counts:
    """Shared by both column profiles (dataclasses defining n_rows and n_missing)."""

    @property
    def n_valid(self) -> int:
        return self.n_rows - self.n_missing

    @property
    def missing_rate(self) -> float:
        return self.n_missing / self.n_rows if self.n_rows else 0.0


@dataclass
class NumericProfile(_Counts):
    """Profile of one numeric column (see the module docstring for the sketch layout)."""

    kind: ClassVar[str] = "numeric"

    n_rows: int
    n_missing: int  # null, NaN or +-inf: none of them can enter a distribution statistic
    mean: float | None
    std: float | None  # population standard deviation (ddof=0), as np.std
    min: float | None
    max: float | None
    edges: np.ndarray
    point_counts: np.ndarray
    gap_counts: np.ndarray
    gap_sums: np.ndarray
    psi_edges: np.ndarray  # inner PSI edges; the outer edges are -inf and +inf
    psi_counts: np.ndarray  # len(psi_edges) + 1 right-closed bins
    exact: bool = False  # reference only: edges are all distinct values of the data
    # Current profiles of low-cardinality references only: distinct values that are not on an
    # edge (needed for Evidently's "<= 5 distinct values" rule); None when not tracked.
    extra_values: list[float] | None = None
    extra_overflow: bool = False
    dtype: str = "float"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "n_rows": int(self.n_rows),
            "n_missing": int(self.n_missing),
            "mean": _opt_float(self.mean),
            "std": _opt_float(self.std),
            "min": _opt_float(self.min),
            "max": _opt_float(self.max),
            "exact": bool(self.exact),
            "edges": _floats(self.edges),
            "point_counts": _ints(self.point_counts),
            "gap_counts": _ints(self.gap_counts),
            "gap_sums": _floats(self.gap_sums),
            "psi_edges": _floats(self.psi_edges),
            "psi_counts": _ints(self.psi_counts),
            "extra_values": None if self.extra_values is None else _floats(self.extra_values),
            "extra_overflow": bool(self.extra_overflow),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericProfile:
        return cls(
            n_rows=int(d["n_rows"]),
            n_missing=int(d["n_missing"]),
            mean=d.get("mean"),
            std=d.get("std"),
            min=d.get("min"),
            max=d.get("max"),
            edges=np.asarray(d["edges"], dtype=np.float64),
            point_counts=np.asarray(d["point_counts"], dtype=np.int64),
            gap_counts=np.asarray(d["gap_counts"], dtype=np.int64),
            gap_sums=np.asarray(d["gap_sums"], dtype=np.float64),
            psi_edges=np.asarray(d["psi_edges"], dtype=np.float64),
            psi_counts=np.asarray(d["psi_counts"], dtype=np.int64),
            exact=bool(d.get("exact", False)),
            extra_values=d.get("extra_values"),
            extra_overflow=bool(d.get("extra_overflow", False)),
            dtype=d.get("dtype", "float"),
        )

    def binning_key(self) -> bytes:
        return self.edges.tobytes() + b"|" + self.psi_edges.tobytes()


@dataclass
class CategoricalProfile(_Counts):
    """Profile of one categorical column: value frequencies, capped with an ``__other__`` bucket.

    For a reference, ``categories`` are its most frequent values (at most ``max_categories``) and
    ``other_count`` counts the rest. For a current profile, ``categories`` are the reference's,
    ``counts`` are the current frequencies of those values, ``unseen_count`` counts values the
    reference never had (``unseen`` keeps the first names and their counts) and ``other_count``
    counts values that may belong to the reference's own ``__other__`` bucket (only possible when
    the reference had more distinct values than the cap; those are not counted as unseen).
    """

    kind: ClassVar[str] = "categorical"

    n_rows: int
    n_missing: int
    categories: list[str]
    counts: np.ndarray
    other_count: int = 0
    n_distinct: int = 0  # distinct non-missing values seen (exact for a reference)
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_count: int = 0
    unseen_distinct: int = 0  # lower bound when more than the kept names were seen
    dtype: str = "string"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "n_rows": int(self.n_rows),
            "n_missing": int(self.n_missing),
            "categories": list(self.categories),
            "counts": _ints(self.counts),
            "other_count": int(self.other_count),
            "n_distinct": int(self.n_distinct),
            "unseen": {str(k): int(v) for k, v in self.unseen.items()},
            "unseen_count": int(self.unseen_count),
            "unseen_distinct": int(self.unseen_distinct),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalProfile:
        return cls(
            n_rows=int(d["n_rows"]),
            n_missing=int(d["n_missing"]),
            categories=[str(c) for c in d["categories"]],
            counts=np.asarray(d["counts"], dtype=np.int64),
            other_count=int(d.get("other_count", 0)),
            n_distinct=int(d.get("n_distinct", 0)),
            unseen={str(k): int(v) for k, v in d.get("unseen", {}).items()},
            unseen_count=int(d.get("unseen_count", 0)),
            unseen_distinct=int(d.get("unseen_distinct", 0)),
            dtype=d.get("dtype", "string"),
        )

    def binning_key(self) -> bytes:
        return json.dumps(self.categories).encode() + (b"|other" if self.other_count else b"")


ColumnProfile = NumericProfile | CategoricalProfile


def column_profile_from_dict(d: dict[str, Any]) -> ColumnProfile:
    if d["kind"] == "numeric":
        return NumericProfile.from_dict(d)
    if d["kind"] == "categorical":
        return CategoricalProfile.from_dict(d)
    raise ValueError(f"unknown column profile kind {d['kind']!r}")


@dataclass
class DatasetProfile:
    """Profiles of the feature columns (and optionally the prediction column) of one data set.

    ``reference_id`` is ``None`` for a reference profile; a current profile carries the
    :meth:`fingerprint` of the reference whose edges and categories it was binned on.
    """

    columns: dict[str, ColumnProfile]
    n_rows: int
    prediction_column: str | None = None
    prediction: NumericProfile | None = None
    reference_id: str | None = None
    sketch_size: int = 1000
    psi_bins: int = 10
    max_categories: int = 1000
    n_chunks: int = 1
    version: int = PROFILE_FORMAT_VERSION

    @property
    def is_reference(self) -> bool:
        return self.reference_id is None

    @property
    def kinds(self) -> dict[str, str]:
        return {name: p.kind for name, p in self.columns.items()}

    def fingerprint(self) -> str:
        """A stable id of the binning (edges, PSI edges, categories) of this reference."""
        h = hashlib.sha256()
        items = list(self.columns.items())
        if self.prediction is not None and self.prediction_column is not None:
            items.append((self.prediction_column, self.prediction))
        for name, prof in items:
            h.update(name.encode() + b"\0" + prof.kind.encode() + b"\0" + prof.binning_key())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "n_rows": int(self.n_rows),
            "reference_id": self.reference_id,
            "sketch_size": int(self.sketch_size),
            "psi_bins": int(self.psi_bins),
            "max_categories": int(self.max_categories),
            "n_chunks": int(self.n_chunks),
            "prediction_column": self.prediction_column,
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "columns": {name: prof.to_dict() for name, prof in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetProfile:
        version = int(d.get("version", PROFILE_FORMAT_VERSION))
        if version > PROFILE_FORMAT_VERSION:
            raise ValueError(f"profile format version {version} is newer than this code")
        pred = d.get("prediction")
        return cls(
            columns={name: column_profile_from_dict(p) for name, p in d["columns"].items()},
            n_rows=int(d["n_rows"]),
            prediction_column=d.get("prediction_column"),
            prediction=None if pred is None else NumericProfile.from_dict(pred),
            reference_id=d.get("reference_id"),
            sketch_size=int(d.get("sketch_size", 1000)),
            psi_bins=int(d.get("psi_bins", 10)),
            max_categories=int(d.get("max_categories", 1000)),
            n_chunks=int(d.get("n_chunks", 1)),
            version=version,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DatasetProfile:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON atomically (temporary file, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetProfile:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
