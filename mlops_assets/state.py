"""Recorded state: what the Dagster instance says happened, as plain facts.

Stages, sensors and schedules all decide from these facts (the latest materialization of
each asset and partition), never from a mutable global such as an MLflow alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import ACCEPTED, DATA_VERSION, LABELLED, MODEL_VERSION, STATUS


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey,
                           partition: str | None = None) -> dg.AssetMaterialization | None:
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
        limit=1,
    )
    return found.records[0].asset_materialization if found.records else None


def value(materialization: dg.AssetMaterialization | None, key: str, default=None):
    if materialization is None or key not in materialization.metadata:
        return default
    return materialization.metadata[key].value


@dataclass(frozen=True)
class PartitionFacts:
    key: str
    status: str | None          # accepted | rejected | None (not validated yet)
    labelled: bool
    data_version: str | None    # of its validated features
    rows: int

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


def partition_facts(instance: dg.DagsterInstance, pipeline: Pipeline) -> list[PartitionFacts]:
    """Every arrival partition, in the order it was added, with its validation outcome."""
    key = pipeline.key(Stage.VALIDATED_FEATURES)
    out = []
    for partition in instance.get_dynamic_partitions(pipeline.partitions_name):
        mat = latest_materialization(instance, key, partition)
        out.append(PartitionFacts(
            key=partition, status=value(mat, STATUS), labelled=bool(value(mat, LABELLED, False)),
            data_version=value(mat, DATA_VERSION), rows=int(value(mat, "dagster/row_count", 0) or 0),
        ))
    return out


def champion_of_record(instance: dg.DagsterInstance, pipeline: Pipeline) -> str | None:
    """The champion version as the pipeline recorded it (promotion or rollback), or None."""
    version = value(latest_materialization(instance, pipeline.key(Stage.REGISTERED_MODEL)), MODEL_VERSION)
    return None if version is None else str(version)
