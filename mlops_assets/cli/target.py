"""Which pipeline a command works on: a spec YAML, or a Component's `defs.yaml`.

`PIPELINE` on the command line is a path (a spec file, a `defs.yaml`, or a folder holding a
`defs.yaml`) or a pipeline name, looked up as `<name>.yaml`, `<name>.yml` or `<name>/defs.yaml`
in the current folder. A Component brings its own resources (`storage_uri`,
`mlflow_tracking_uri`, `s3_endpoint_url`); a plain spec uses the embedded defaults under its
`state_dir`. The Dagster home is `--dagster-home`, else `$DAGSTER_HOME`, else
`<state_dir>/dagster_home` (created with the embedded SQLite instance).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlops_assets.spec import PipelineSpec, SpecError

COMPONENT_TYPES = ("mlops_assets.MLOpsPipelineComponent", "mlops_assets.component.MLOpsPipelineComponent")

# The embedded default instance (as mlops_assets/demo/dagster.yaml, with the asset daemon): SQLite
# under DAGSTER_HOME, runs queued for a daemon, at most 4 at once, one training step at a time
# (the mlops_training pool).
DEFAULT_DAGSTER_YAML = """\
# Embedded default instance written by `mlops-assets`: SQLite files under $DAGSTER_HOME.
# Production (PostgreSQL, queued runs, S3 compute logs): see deploy/dagster.yaml.
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
# Runs queue for a daemon, which looks at the queue every second.
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: 1        # e.g. the mlops_training pool: one training step at a time
telemetry:
  enabled: false
"""


class TargetError(ValueError):
    """The pipeline could not be found or loaded; the message says what was tried."""


@dataclass(frozen=True)
class PipelineTarget:
    path: Path                       # the spec file or the defs.yaml
    kind: str                        # "spec" | "component"
    spec: PipelineSpec
    resources: dict[str, Any] = field(default_factory=dict)   # storage / registry / s3 overrides

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state_dir(self) -> Path:
        return Path(self.spec.state_dir)

    def build_defs(self):
        from mlops_assets.definitions import build_mlops_defs

        return build_mlops_defs(self.spec, **self.resources)

    def registry(self):
        from mlops_assets.definitions import default_registry

        return self.resources.get("registry") or default_registry(self.spec)

    def storage(self):
        from mlops_assets.definitions import default_storage

        return self.resources.get("storage") or default_storage(self.spec)


def find_target_path(arg: str | None, cwd: Path | None = None) -> Path:
    cwd = cwd or Path.cwd()
    arg = arg or os.environ.get("MLOPS_SPEC")
    if not arg:
        raise TargetError("name the pipeline: a spec YAML, a defs.yaml (or its folder), or a pipeline name "
                          "(looked up as <name>.yaml in this folder); or set MLOPS_SPEC")
    path = Path(arg).expanduser()
    if not path.is_absolute():
        path = cwd / path
    if path.is_dir():
        if (path / "defs.yaml").is_file():
            return (path / "defs.yaml").resolve()
        raise TargetError(f"{path} is a folder without a defs.yaml")
    if path.is_file():
        return path.resolve()
    tried = [cwd / f"{arg}.yaml", cwd / f"{arg}.yml", cwd / arg / "defs.yaml"]
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    raise TargetError(f"no pipeline {arg!r}: not a file, and none of {', '.join(str(t) for t in tried)} exists")


def load_target(arg: str | None, cwd: Path | None = None) -> PipelineTarget:
    path = find_target_path(arg, cwd)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TargetError(f"{path}: cannot read it as YAML: {exc}") from exc
    if isinstance(data, dict) and "type" in data and "attributes" in data:
        return _component_target(path, data)
    try:
        return PipelineTarget(path, "spec", PipelineSpec.from_yaml(path))
    except SpecError as exc:
        raise TargetError(str(exc)) from exc


def _component_target(path: Path, data: dict) -> PipelineTarget:
    """A defs.yaml of MLOpsPipelineComponent: templates rendered, attributes validated by the spec."""
    from dagster.components.resolved.context import ResolutionContext

    from mlops_assets.component import MLOpsPipelineComponent

    if data["type"] not in COMPONENT_TYPES:
        raise TargetError(f"{path}: type {data['type']!r} is not {COMPONENT_TYPES[0]}")
    try:
        raw = MLOpsPipelineComponent.model_validate(data["attributes"] or {})
        component = MLOpsPipelineComponent.resolve_from_model(ResolutionContext.default(), raw)
    except Exception as exc:
        raise TargetError(f"{path}: invalid MLOpsPipelineComponent attributes: {exc}") from exc
    base = path.parent
    resources = {k: v for k, v in (("storage", component._storage(base)), ("registry", component._registry()),
                                   ("s3", component._s3())) if v is not None}
    translator = component.build_translator()
    if translator is not None:
        resources["translator"] = translator
    return PipelineTarget(path, "component", component.to_spec(base), resources)


def dagster_home(target: PipelineTarget, given: str | None = None, *, create: bool = True) -> Path:
    """The instance directory, with the embedded dagster.yaml written into a new one."""
    home = Path(given or os.environ.get("DAGSTER_HOME") or target.state_dir / "dagster_home").expanduser().resolve()
    if create:
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            (home / "dagster.yaml").write_text(DEFAULT_DAGSTER_YAML)
    return home


def open_instance(home: Path):
    """The Dagster instance at `home`, its SQLite schemas created here first (processes that each
    create them on first use race: `table alembic_version already exists`)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)   # the dagster.yaml reads it for base_dir
    instance = dg.DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)
    instance.all_instigator_state()
    instance.get_latest_materialization_event(dg.AssetKey(["__mlops_assets_schema_probe__"]))
    return instance
