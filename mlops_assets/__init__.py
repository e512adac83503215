"""mlops_assets: the ML lifecycle as Dagster software-defined assets."""

import os as _os

# OpenMP (LightGBM, torch) spins idle threads by default. When anything else runs on the
# machine, a spinning team waits on a descheduled thread: LightGBM training on 2 threads
# went from 0.4 s to 11.6 s here with one busy neighbour. Passive waiting costs ~nothing
# when the machine is idle. Set before lightgbm/torch load; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mlops_assets.component import MLOpsPipelineComponent
from mlops_assets.definitions import build_mlops_defs, build_pipelines_defs
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources import ArtifactStore, MLflowRegistry, Notifier
from mlops_assets.spec import PipelineSpec, SpecError
from mlops_assets.translator import MLOpsTranslator
from mlops_assets.version import __version__

__all__ = [
    "ArtifactStore",
    "MLOpsPipelineComponent",
    "MLOpsTranslator",
    "MLflowRegistry",
    "Notifier",
    "Pipeline",
    "PipelineSpec",
    "SpecError",
    "Stage",
    "__version__",
    "build_mlops_defs",
    "build_pipelines_defs",
]
