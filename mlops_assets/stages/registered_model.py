"""`registered_model`: the version the gate blessed becomes the champion.

Like TFX's Pusher: it only ever promotes a blessed (or audited force-promoted) version, the
one `evaluation_report` judged in this run, and it checks the verdict against the version's
own MLflow record before the `champion` alias moves.
"""


import dagster as dg

from mlops_assets.core.gate import Approval
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.signals import APPROVAL, GATE_PASSED, MODEL_VERSION
from mlops_assets.stages.base import stage_asset, upstream_materialization
from mlops_assets.stages.metadata import markdown_table
from mlops_assets.state import value


class PromotionError(RuntimeError):
    pass


def build_registered_model_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    @stage_asset(pipeline, Stage.REGISTERED_MODEL, resources={pipeline.storage_key, pipeline.registry_key})
    def registered_model(context: dg.AssetExecutionContext):
        res = pipeline.resources(context)
        evaluation = upstream_materialization(context, pipeline.key(Stage.EVALUATION_REPORT))
        version = value(evaluation, MODEL_VERSION)
        if version is None:
            raise PromotionError("no evaluated model: materialize the evaluation report first")
        version = str(version)
        info = res.registry.get_version(pipeline.model_name, version)
        approval = Approval(value(evaluation, APPROVAL))
        verdict = info.tags.get(GATE_PASSED)
        if not approval.promotable or verdict != "true" or value(evaluation, GATE_PASSED) is not True:
            raise PromotionError(
                f"version {version} is not promotable: the evaluation says approval={approval.value}, "
                f"gate_passed={value(evaluation, GATE_PASSED)}; MLflow records gate_passed={verdict}"
            )
        result = res.registry.promote(pipeline.model_name, version, run_id=context.run.run_id,
                                      approval=approval.value)
        if result.recovered:
            context.log.warning(f"a half-done earlier promotion was {result.recovered} first")
        previous = result.previous
        record = {"version": version, "previous_champion": previous, "approval": approval.value,
                  "run_id": context.run.run_id, "promotion_id": result.intent_id}
        uri = res.storage.write_json(pipeline.layout.registration(version), record)
        context.log.info(f"champion: v{previous or '-'} -> v{version}" if result.changed
                         else f"v{version} already is the champion")
        info = res.registry.get_version(pipeline.model_name, version)
        return dg.MaterializeResult(
            metadata=registration_metadata(res, info, previous, approval, uri),
            data_version=dg.DataVersion(f"v{version}"),
        )

    return registered_model


def registration_metadata(res, info, previous: str | None, approval: Approval, uri: str) -> dict:
    return {
        "model_name": info.name,
        MODEL_VERSION: info.version,
        "alias": "champion",
        "previous_champion": previous or "none",
        "changed": previous != info.version,
        APPROVAL: approval.value,
        "bootstrap": previous is None,
        "mlflow_version": dg.MetadataValue.url(res.registry.version_url(info.name, info.version)),
        "tags": dg.MetadataValue.md(markdown_table(
            [{"tag": k, "value": v} for k, v in sorted(info.tags.items())
             if k not in ("gate_message", "bundle_manifest", "rejection_reason")]
        )),
        "registration_uri": dg.MetadataValue.path(uri),
    }
