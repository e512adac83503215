"""A small world for stage tests: one spec, its definitions, a temporary instance, and helpers
that land a file and materialize exactly the stages a test names (`dg.materialize`)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import LIFECYCLE, Pipeline, Stage
from mlops_assets_tests.conftest import small_spec

UP_TO_CHAMPION = (Stage.RAW_DATA, Stage.VALIDATED_FEATURES, Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT,
                  Stage.REGISTERED_MODEL)


class StageWorld:
    def __init__(self, root, instance: dg.DagsterInstance, spec=None, **overrides):
        self.spec = spec or small_spec(root, **overrides)
        self.pipeline = Pipeline(self.spec)
        self.defs = build_mlops_defs(self.spec)
        self.instance = instance

    # -- inputs -----------------------------------------------------------------------------
    def land(self, day: int = 1, n_rows: int = 3_000, **kwargs) -> str:
        """Write one day's file into the landing folder and register its partition."""
        path = write_day(self.spec.source.path, dt.date(2026, 1, day), n_rows=n_rows, day_index=day - 1, **kwargs)
        self.instance.add_dynamic_partitions(self.pipeline.partitions_name, [path.name])
        return path.name

    # -- running stages ---------------------------------------------------------------------
    @property
    def assets(self) -> list:
        return list(self.defs.assets or [])

    def materialize(self, stages, partition: str | None = None, raise_on_error: bool = True,
                    tags: dict | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.assets, selection=self.pipeline.keys(stages), instance=self.instance,
            resources=self.defs.resources, partition_key=partition, raise_on_error=raise_on_error,
            tags=tags,
        )

    def bootstrap(self, partition: str) -> dg.ExecuteInProcessResult:
        """Everything up to a champion, on one partition."""
        first = self.materialize(UP_TO_CHAMPION[:2], partition)
        assert first.success
        return self.materialize(UP_TO_CHAMPION[2:])

    # -- reading results --------------------------------------------------------------------
    def resource(self, attr: str):
        return self.defs.resources[getattr(self.pipeline, f"{attr}_key")]

    def latest(self, stage: Stage, partition: str | None = None) -> dg.AssetMaterialization | None:
        from mlops_assets.state import latest_materialization

        return latest_materialization(self.instance, self.pipeline.key(stage), partition)

    def metadata(self, stage: Stage, partition: str | None = None) -> dict:
        mat = self.latest(stage, partition)
        assert mat is not None, f"{stage} was not materialized"
        return {k: v.value for k, v in mat.metadata.items()}


def assert_definition(world: StageWorld, stage: Stage, *, deps, kinds, checks=(), partitioned: bool,
                      non_blocking=()) -> dg.AssetSpec:
    """The asset as the translator defines it: key, deps, kinds, blocking checks, code version."""
    graph = world.defs.resolve_asset_graph()
    key = world.pipeline.key(stage)
    node = graph.get(key)
    assert key == dg.AssetKey([world.spec.name, stage.value])
    assert set(node.parent_keys) == set(world.pipeline.keys(deps))
    assert node.kinds == set(kinds)
    assert (node.partitions_def is not None) == partitioned
    assert node.group_name == world.spec.name
    assert node.code_version and node.code_version.startswith("0.1.0+")
    found = {c.name: c for c in node.assets_def.check_specs}
    assert set(found) == set(checks)
    assert {n for n, c in found.items() if not c.blocking} == set(non_blocking)
    assert stage in LIFECYCLE or stage in (Stage.GROUND_TRUTH, Stage.MODEL_PERFORMANCE)
    return world.pipeline.asset_spec(stage)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's message with its causes, as one string."""
    parts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            parts.append(error.message)
            error = error.cause
    return "\n".join(parts)
