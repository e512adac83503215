"""Delayed labels: every label file in the ground-truth folder, read as one frame."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from mlops_assets.sources.files import read_arrival_file

LABEL_SUFFIXES = (".parquet", ".pq", ".csv")


def read_label_files(directory: str) -> pl.DataFrame:
    if not os.path.isdir(directory):
        return pl.DataFrame()
    files = sorted(
        p for p in Path(directory).glob("*")
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES and not p.name.startswith((".", "_"))
    )
    frames = [read_arrival_file(str(p)) for p in files]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
