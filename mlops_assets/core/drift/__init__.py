"""Full-data drift engine: reference/current profiles and Evidently-compatible verdicts.

Pure numpy/polars/scipy. Evidently itself is only imported by :mod:`.evidently_report` (the HTML
report and cross-checks), inside its functions. See ``docs/drift.md``.
"""

from .build import (
    build_profile,
    check_current_schema,
    profile_frame,
    profile_parquet,
)
from .compare import (
    DEFAULT_THRESHOLDS,
    DriftConfig,
    DriftResult,
    FeatureDrift,
    FeatureDriftConfig,
    auto_method,
    compare_profiles,
)
from .errors import ColumnKind, DriftInputError
from .evidently_report import evidently_verdicts, render_evidently_report
from .profile import (
    CategoricalProfile,
    ColumnProfile,
    DatasetProfile,
    NumericProfile,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CategoricalProfile",
    "ColumnKind",
    "ColumnProfile",
    "DatasetProfile",
    "DriftConfig",
    "DriftInputError",
    "DriftResult",
    "FeatureDrift",
    "FeatureDriftConfig",
    "NumericProfile",
    "auto_method",
    "build_profile",
    "check_current_schema",
    "compare_profiles",
    "evidently_verdicts",
    "profile_frame",
    "profile_parquet",
    "render_evidently_report",
]
