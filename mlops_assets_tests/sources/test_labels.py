"""Label files read within the spec's limits."""

import os

import polars as pl
import pytest

from mlops_assets.sources.files import ArrivalRefused
from mlops_assets.sources.labels import read_label_files
from mlops_assets.spec import LimitsSpec


def test_label_files_within_limits_are_read_and_others_refused(tmp_path):
    pl.DataFrame({"id": [1, 2], "label": [0, 1]}).write_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("id,label\n3,1\n")
    assert read_label_files(str(tmp_path), LimitsSpec()).height == 3
    with pytest.raises(ArrivalRefused, match="a.parquet has 2 rows, over limits.max_rows \\(1\\)"):
        read_label_files(str(tmp_path), LimitsSpec(max_rows=1))
    os.symlink(tmp_path / "a.parquet", tmp_path / "c.parquet")
    with pytest.raises(ArrivalRefused, match="c.parquet is a symbolic link"):
        read_label_files(str(tmp_path), LimitsSpec())
    assert read_label_files(str(tmp_path)).height == 5          # without limits: as before
