"""Definitions for `dagster dev` (see workspace.yaml): the demo pipeline under .demo/."""

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo import demo_spec

defs = build_mlops_defs(demo_spec())
