"""mlops_assets: the ML lifecycle as Dagster software-defined assets."""

__version__ = "0.1.0"

from mlops_assets.component import MLOpsPipelineComponent
from mlops_assets.definitions import build_mlops_defs, build_pipelines_defs
from mlops_assets.resources import ArtifactStore, MLflowRegistry, Notifier
from mlops_assets.spec import PipelineSpec, SpecError

__all__ = [
    "ArtifactStore",
    "MLOpsPipelineComponent",
    "MLflowRegistry",
    "Notifier",
    "PipelineSpec",
    "SpecError",
    "__version__",
    "build_mlops_defs",
    "build_pipelines_defs",
]
