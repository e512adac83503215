"""Edge variants inside a bundle directory: ``edge/<name>.onnx`` plus ``edge/<name>.json``.

The json is written last and is the commit marker: it holds the measurements, the rules, the
verdict and the SHA-256 of the ONNX file. Only shipped variants have an ONNX file; a rejected
variant keeps its json (``"shipped": false``) so the report can say why. An ONNX file with no
json is an unfinished write and is ignored. A shipped variant whose bytes do not match its
recorded hash is refused on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.core.edge.rules import EdgeDecision
from mlops_assets.core.edge.variants import EdgeVariant

__all__ = ["EDGE_DIR", "EdgeVariantError", "EdgeVariantInfo", "load_variants", "save_variants"]

EDGE_DIR = "edge"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[a-z0-9_]+$")  # a variant name becomes a file name


class EdgeVariantError(ValueError):
    """A stored edge variant that must not be served; the message names the file."""


@dataclass(frozen=True)
class EdgeVariantInfo:
    name: str
    shipped: bool
    sha256: str | None
    size_bytes: int
    summary: dict  # EdgeVariant.to_dict() as stored (NaN stored as null)
    decision: EdgeDecision
    onnx_bytes: bytes | None  # None for a variant that was not shipped

    def scorer(self, threads: int | None = None):
        from mlops_assets.core.scoring import OnnxScorer

        if self.onnx_bytes is None:
            raise EdgeVariantError(
                f"edge variant {self.name!r} was not shipped: {self.decision.message()}"
            )
        return OnnxScorer(self.onnx_bytes, threads=threads)


def save_variants(
    variants: Sequence[EdgeVariant], decisions: Sequence[EdgeDecision], directory: str | Path
) -> list[Path]:
    """Write each variant's record (and, when shipped, its ONNX) under ``<directory>/edge``."""
    by_name = {d.variant: d for d in decisions}
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate edge variant names: {names}")
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"no decision for edge variants {missing}")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise ValueError(f"edge variant names must match {_NAME.pattern}: {bad}")
    edge = Path(directory) / EDGE_DIR
    edge.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in variants:
        decision = by_name[variant.name]
        shipped = decision.passed and variant.error is None and bool(variant.onnx_bytes)
        onnx_path = edge / f"{variant.name}.onnx"
        if shipped:
            _atomic_write(onnx_path, variant.onnx_bytes)
            written.append(onnx_path)
        else:
            onnx_path.unlink(missing_ok=True)  # never leave bytes behind a "not shipped" record
        record = {
            "format_version": FORMAT_VERSION,
            "name": variant.name,
            "shipped": shipped,
            "onnx_file": onnx_path.name if shipped else None,
            "sha256": variant.sha256 if shipped else None,
            "size_bytes": variant.size_bytes,
            "variant": variant.to_dict(),
            "decision": decision.to_dict(),
        }
        json_path = edge / f"{variant.name}.json"
        text = json.dumps(_json_safe(record), indent=2, sort_keys=True, allow_nan=False)
        _atomic_write(json_path, text.encode())
        written.append(json_path)
    return written


def load_variants(directory: str | Path) -> dict[str, EdgeVariantInfo]:
    """Every recorded edge variant of a bundle directory, shipped or not, by name.

    Raises EdgeVariantError for an unreadable record or a shipped variant whose ONNX file is
    missing or differs from the recorded size and SHA-256.
    """
    edge = Path(directory) / EDGE_DIR
    if not edge.is_dir():
        return {}
    found: dict[str, EdgeVariantInfo] = {}
    for json_path in sorted(edge.glob("*.json")):
        label = f"{EDGE_DIR}/{json_path.name}"
        try:
            record = json.loads(json_path.read_text())
            name, shipped = record["name"], bool(record["shipped"])
            decision = EdgeDecision.from_dict(record["decision"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EdgeVariantError(f"{label}: unreadable edge variant record ({exc})") from exc
        if record.get("format_version") != FORMAT_VERSION:
            raise EdgeVariantError(
                f"{label}: unsupported format_version {record.get('format_version')!r}"
            )
        if name != json_path.stem:
            raise EdgeVariantError(f"{label}: records variant {name!r}, not {json_path.stem!r}")
        onnx_bytes = _verified_bytes(edge, record, label) if shipped else None
        found[name] = EdgeVariantInfo(
            name=name,
            shipped=shipped,
            sha256=record.get("sha256"),
            size_bytes=int(record.get("size_bytes") or 0),
            summary=record.get("variant", {}),
            decision=decision,
            onnx_bytes=onnx_bytes,
        )
    return found


def _verified_bytes(edge: Path, record: dict, label: str) -> bytes:
    onnx_path = edge / f"{record['name']}.onnx"
    where = f"{EDGE_DIR}/{onnx_path.name}"
    if not onnx_path.is_file():
        raise EdgeVariantError(f"{where}: missing, but {label} records it as shipped")
    data = onnx_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != record.get("size_bytes") or digest != record.get("sha256"):
        raise EdgeVariantError(
            f"{where}: {len(data)} bytes with sha256 {digest[:12]}..., but {label} records "
            f"{record.get('size_bytes')} bytes with sha256 {str(record.get('sha256'))[:12]}...: "
            "refusing a corrupted or replaced edge variant"
        )
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value):
    """NaN and infinity become null: the records stay standard JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
