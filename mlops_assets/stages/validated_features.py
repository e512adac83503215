"""`validated_features`: blocking data checks, canonical features and the split.

Validation runs before anything is written: a failing batch leaves the previous good file
for this partition untouched, and the blocking checks stop everything downstream.
"""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import polars as pl

from mlops_assets.core.features import SPLIT_COLUMN, data_hash, prepare_features
from mlops_assets.core.validation import (
    CHECK_DESCRIPTIONS,
    CHECK_NAMES,
    ValidationReport,
    validate_batch,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import ACCEPTED, DATA_VERSION, LABELLED, REJECTED, STATUS
from mlops_assets.stages.base import stage_asset, write_validated
from mlops_assets.stages.metadata import column_descriptions, table, table_schema
from mlops_assets.state import champion_of_record


def build_validated_features_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    key = pipeline.key(Stage.VALIDATED_FEATURES)
    checks = [dg.AssetCheckSpec(name, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[name])
              for name in CHECK_NAMES]

    @stage_asset(pipeline, Stage.VALIDATED_FEATURES, resources={pipeline.storage_key, pipeline.registry_key},
                 check_specs=checks)
    def validated_features(context: dg.AssetExecutionContext):
        storage = pipeline.resources(context).storage
        partition = context.partition_key
        raw = storage.read_parquet(pipeline.layout.raw(partition))
        report, accepted = validate_and_store(context, pipeline, storage, raw)
        if accepted is None:
            rejection = storage.write_json(
                pipeline.layout.rejection(partition, context.run.run_id),
                {"partition": partition, "violations": [v.__dict__ for v in report.violations]},
            )
            context.log.error(f"partition {partition} rejected: {report.message()}")
            return dg.MaterializeResult(
                metadata={STATUS: REJECTED, "violations": report.message(),
                          "rejection_report": dg.MetadataValue.path(rejection)},
                check_results=check_results(report),
            )
        features, version, uri = accepted
        return dg.MaterializeResult(
            metadata=accepted_metadata(features, report, spec, uri, version),
            check_results=check_results(report),
            data_version=dg.DataVersion(version),
        )

    return validated_features


LABEL_EXPECTATION_ROWS = 20_000   # a seeded sample: the expected class shares to within ~0.3 points


def champion_label_profile(context, pipeline: Pipeline, raw: pl.DataFrame) -> dict | None:
    """What the labels of a labelled batch should look like once a champion exists: the label
    distribution the champion predicts for the batch's rows (core/labels.py says why), or its
    training labels when it cannot score them (the batch then fails another check anyway)."""
    from mlops_assets.core.labels import expected_label_profile

    spec = pipeline.spec
    if not spec.labels.check or spec.target not in raw.columns:
        return None
    champion = champion_of_record(context.instance, pipeline)
    if champion is None:
        return None
    bundle = pipeline.resources(context).registry.load_bundle(pipeline.model_name, champion)
    training = bundle.meta.get("label_profile")
    if training is None:
        return None
    sample = raw if raw.height <= LABEL_EXPECTATION_ROWS else raw.sample(LABEL_EXPECTATION_ROWS, seed=0)
    try:
        scores = bundle.score(sample)
    except (ValueError, TypeError, pl.exceptions.PolarsError) as exc:   # missing or mistyped features
        context.log.warning(f"label sanity against the training labels: champion v{champion} cannot score "
                            f"this batch ({exc})")
        return training
    return expected_label_profile(training, scores, spec.task)


def check_results(report: ValidationReport) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=name,
            passed=not report.for_check(name),
            severity=dg.AssetCheckSeverity.ERROR,
            description=report.message(name),
            metadata={"violations": len(report.for_check(name))},
        )
        for name in CHECK_NAMES
    ]


def accepted_metadata(features: pl.DataFrame, report: ValidationReport, spec, uri: str, version: str) -> dict:
    split_counts = features.group_by(SPLIT_COLUMN).len().sort(SPLIT_COLUMN).rows()
    metadata = {
        STATUS: ACCEPTED,
        "dagster/row_count": features.height,
        "dagster/column_schema": table_schema(features, column_descriptions(spec)),
        "uri": dg.MetadataValue.path(uri),
        LABELLED: report.labelled,
        "split": table([{"split": s, "rows": n} for s, n in split_counts]),
        DATA_VERSION: version,
    }
    if report.labelled and spec.task == "binary":
        metadata["label_rate"] = float(features[spec.target].mean())
    return metadata


def validate_and_store(context, pipeline: Pipeline, storage, raw: pl.DataFrame):
    """Validate the batch and, when it passes, write its features: (report, None) for a rejected
    batch (nothing written), else (report, (features, data version, uri)).

    The features and their content hash are computed while the batch is validated, and the hash
    goes on while the file is written: polars asks for the footer's metadata only after it has
    encoded the data, and polars and hashlib release the GIL, so the three share the cores."""
    spec = pipeline.spec
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="validated-features") as pool:
        prepared = pool.submit(prepare_features, raw, spec)
        hashed = pool.submit(lambda: data_hash(prepared.result()))
        report = validate_batch(raw, spec, label_reference=champion_label_profile(context, pipeline, raw))
        if not report.passed:
            hashed.cancel()
            return report, None
        features = prepared.result()
        uri = write_validated(storage, pipeline, partition=context.partition_key, features=features,
                              version=hashed.result)
        return report, (features, hashed.result(), uri)
