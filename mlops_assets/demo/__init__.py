"""The demo: a loan-default pipeline named `demo`, its data generator and a headless run."""

from __future__ import annotations

import os
from pathlib import Path

from mlops_assets.spec import PipelineSpec

SPEC_FILE = Path(__file__).with_name("demo_spec.yaml")


def demo_dir() -> Path:
    return Path(os.environ.get("MLOPS_DEMO_DIR", ".demo")).resolve()


def demo_spec(root: str | Path | None = None, **overrides) -> PipelineSpec:
    """The demo spec with its paths under `root` (default: $MLOPS_DEMO_DIR or ./.demo)."""
    root = Path(root).resolve() if root else demo_dir()
    spec = PipelineSpec.from_yaml(SPEC_FILE)
    data = spec.model_dump(mode="json")
    data["state_dir"] = str(root / "state")
    data["source"]["path"] = str(root / "landing")
    data.update(overrides)
    return PipelineSpec.from_dict(data)
