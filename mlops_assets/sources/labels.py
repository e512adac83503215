"""Delayed labels: every label file in the ground-truth folder, read as one frame."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from mlops_assets.sources.files import read_arrival_file, read_local_arrival

LABEL_SUFFIXES = (".parquet", ".pq", ".csv")


def read_label_files(directory: str, limits=None) -> pl.DataFrame:
    """With `limits` (the spec's `limits`), each file is read as an arrival is: links and
    special files refused, size and shape checked before it is decoded."""
    files = label_files(directory)
    if limits is None:
        frames = [read_arrival_file(str(p)) for p in files]
    else:
        frames = [read_local_arrival(str(p), limits=limits)[0] for p in files]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def label_files(directory: str) -> list[Path]:
    if not os.path.isdir(directory):
        return []
    return sorted(p for p in Path(directory).glob("*")
                  if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES and not p.name.startswith((".", "_")))


def label_files_fingerprint(directory: str) -> str:
    """Changes whenever a label file is added, removed or rewritten (name, size, mtime): cheap
    enough for every sensor tick, where hashing every label file would not be."""
    import hashlib

    digest = hashlib.sha256()
    for path in label_files(directory):
        st = path.stat()
        digest.update(f"{path.name}\x1f{st.st_size}\x1f{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
