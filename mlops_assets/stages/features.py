"""`validated_features`: blocking data checks, canonical features and the split.

Validation runs before anything is written: a failing batch leaves the previous good
file for this partition untouched, and the blocking checks stop everything downstream.
"""


import dagster as dg
import polars as pl

from mlops_assets.core.features import SPLIT_COLUMN, data_hash, prepare_features
from mlops_assets.core.validation import CHECK_DESCRIPTIONS, CHECK_NAMES, validate_batch
from mlops_assets.stages.common import Names, Paths, markdown_table, table_schema


def build_features_asset(names: Names, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)
    key = names.key("validated_features")
    check_specs = [
        dg.AssetCheckSpec(name, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[name])
        for name in CHECK_NAMES
    ]

    @dg.asset(
        key=key,
        group_name=spec.name,
        partitions_def=partitions,
        deps=[names.key("raw_data")],
        check_specs=check_specs,
        kinds={"polars", "parquet"},
        code_version=names.code_version,
        automation_condition=names.eager_condition,
        required_resource_keys={names.storage},
        description="Validated, typed features with a deterministic train/valid/holdout split.",
    )
    def validated_features(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = getattr(context.resources, names.storage)
        partition = context.partition_key
        raw = storage.read_parquet(paths.raw(partition))
        report = validate_batch(raw, spec)
        check_results = [
            dg.AssetCheckResult(
                check_name=name,
                passed=not report.for_check(name),
                severity=dg.AssetCheckSeverity.ERROR,
                description=report.message(name),
                metadata={"violations": len(report.for_check(name))},
            )
            for name in CHECK_NAMES
        ]
        if not report.passed:
            rejection = storage.write_json(
                paths.rejection(partition, context.run_id),
                {"partition": partition, "violations": [v.__dict__ for v in report.violations]},
            )
            context.log.error(f"partition {partition} rejected: {report.message()}")
            return dg.MaterializeResult(
                metadata={"status": "rejected", "violations": report.message(),
                          "rejection_report": dg.MetadataValue.path(rejection)},
                check_results=check_results,
            )

        features = prepare_features(raw, spec)
        uri = storage.write_parquet(paths.features(partition), features)
        _save_partition_profile(storage, paths.partition_profile(partition), features, spec)
        split_counts = features.group_by(SPLIT_COLUMN).len().sort(SPLIT_COLUMN).rows()
        metadata = {
            "status": "accepted",
            "dagster/row_count": features.height,
            "dagster/column_schema": table_schema(features),
            "uri": dg.MetadataValue.path(uri),
            "labelled": report.labelled,
            "split": dg.MetadataValue.md(markdown_table([{"split": s, "rows": n} for s, n in split_counts])),
        }
        if report.labelled and spec.task == "binary":
            metadata["label_rate"] = float(features[spec.target].mean())
        version = data_hash(features)
        metadata["data_version"] = version
        return dg.MaterializeResult(
            metadata=metadata, check_results=check_results, data_version=dg.DataVersion(version)
        )

    return validated_features


def _save_partition_profile(storage, rel: str, features: pl.DataFrame, spec) -> None:
    from mlops_assets.core.drift import build_profile

    profile = build_profile(features, spec.feature_types)
    storage.write_json(rel, profile.to_dict())
