"""Resources: artifact storage, the MLflow registry and alerts."""

from mlops_assets.resources.notifier import Notifier
from mlops_assets.resources.registry import MLflowRegistry
from mlops_assets.resources.storage import ArtifactStore

__all__ = ["ArtifactStore", "MLflowRegistry", "Notifier"]
