"""Full-data drift engine: profiles, Evidently-compatible verdicts and the calibrated retrain signal.

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
from .signal import (
    DriftSignal,
    DriftSignalPolicy,
    SignalTest,
    default_key_features,
    drift_signal,
    policy_from_spec,
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
    "DriftSignal",
    "DriftSignalPolicy",
    "FeatureDrift",
    "FeatureDriftConfig",
    "NumericProfile",
    "SignalTest",
    "auto_method",
    "build_profile",
    "check_current_schema",
    "compare_profiles",
    "default_key_features",
    "drift_signal",
    "evidently_verdicts",
    "policy_from_spec",
    "profile_frame",
    "profile_parquet",
    "render_evidently_report",
]
