"""`registered_model`: the version the gate blessed becomes the champion.

Like TFX's Pusher: it only ever promotes a blessed (or audited force-promoted) version, the
one `evaluation_report` judged in this run, and it checks the verdict against the version's
own MLflow record before the `champion` alias moves.

With `release.mode` shadow or canary (and a champion already there), the blessed version is
not promoted here: it becomes the version *under release* (alias `challenger`, `release_*`
tags on the version, the release on this materialization), and the champion of record stays.
The release job promotes or ends it later, on the release rule's decision (core/release.py).
"""


import time

import dagster as dg

from mlops_assets.champion_record import (
    recorded_for_request,
    recover_and_record,
    rolled_back_after_evaluation,
)
from mlops_assets.core.gate import Approval
from mlops_assets.core.release import ENDED, NONE, Release
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.registry import CHALLENGER
from mlops_assets.signals import (
    APPROVAL,
    GATE_PASSED,
    MODEL_VERSION,
    RELEASE,
    RELEASE_MODE,
    RELEASE_STATE,
    RELEASE_VERSION,
)
from mlops_assets.stages.base import stage_asset, upstream_materialization
from mlops_assets.stages.metadata import table
from mlops_assets.state import champion_of_record, release_of_record, value


class PromotionError(RuntimeError):
    pass


def build_registered_model_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    @stage_asset(pipeline, Stage.REGISTERED_MODEL, resources={pipeline.storage_key, pipeline.registry_key})
    def registered_model(context: dg.AssetExecutionContext):
        # A generator, so that "already recorded" can yield no output at all (the spec is
        # skippable): returning None would still store a (blank) materialization.
        result = register(context, pipeline)
        if result is not None:
            yield result

    return registered_model


def register(context: dg.AssetExecutionContext, pipeline: Pipeline) -> dg.MaterializeResult | None:
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
    # A move a killed run left half done (someone else's rollback, say) is finished and recorded
    # first, so this promotion starts from the champion of record and every move is recorded once.
    repaired = recover_and_record(context.instance, pipeline, res.registry, promoting=version,
                                  recorded_by=f"the promotion of v{version}")
    if repaired:
        context.log.warning(repaired)
    refused = rolled_back_after_evaluation(context.instance, pipeline, version)
    if refused:
        raise PromotionError(refused)
    champion = champion_of_record(context.instance, pipeline)
    alias = res.registry.champion(pipeline.model_name) if champion == version else None
    if alias is not None and alias.version == version:
        # Materialized again (by hand, say) for the champion it already made: nothing moves, and a
        # second record would count one promotion twice.
        context.log.info(f"v{version} already is the champion of record; nothing to promote")
        return None
    if pipeline.spec.release.mode != NONE and champion is not None and champion != version:
        return start_release(context, pipeline, res, version, champion, approval)
    if recorded_for_request(context.instance, pipeline, context.run, rollback=False, version=version):
        # A re-execution of a run that died after storing this very record: the promotion is
        # done and recorded once; a second record would count it twice. The step succeeds
        # without one (downstream steps of this run skip).
        context.log.info(f"v{version}'s promotion is already recorded by this run's earlier attempt")
        return None
    result = res.registry.promote(pipeline.model_name, version, run_id=context.run.run_id,
                                  approval=approval.value)
    superseded = end_superseded(context, pipeline, res, version, "promoted directly (release.mode none)")
    if result.recovered:
        context.log.warning(f"a half-done earlier promotion was {result.recovered} first")
    previous = result.previous
    record = {"version": version, "previous_champion": previous, "approval": approval.value,
              "run_id": context.run.run_id, "promotion_id": result.intent_id}
    uri = res.storage.write_json(pipeline.layout.registration(version), record)
    context.log.info(f"champion: v{previous or '-'} -> v{version}" if result.changed
                     else f"v{version} already is the champion")
    info = res.registry.get_version(pipeline.model_name, version)
    metadata = registration_metadata(res, info, previous, approval, uri)
    if superseded is not None:
        metadata.update(release_metadata(superseded))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(f"v{version}"))


def end_superseded(context, pipeline: Pipeline, res, version: str, how: str) -> Release | None:
    """An active release of another version ends when `version` takes its place."""
    current = release_of_record(context.instance, pipeline)
    if current is None or not current.active or current.version == version:
        return None
    ended = current.finished(ENDED, f"superseded: v{version} {how}")
    res.registry.set_tags(pipeline.model_name, ended.version, ended.to_tags())
    challenger = res.registry.version_by_alias(pipeline.model_name, CHALLENGER)
    if challenger is not None and challenger.version == ended.version:
        res.registry.delete_alias(pipeline.model_name, CHALLENGER)
    context.log.info(ended.describe())
    return ended


def start_release(context, pipeline: Pipeline, res, version: str, champion: str, approval: Approval):
    """Record `version` as the version under release; the champion of record stays `champion`.

    Idempotent: a re-run for the version already under release keeps its start; a version
    whose release already finished (promoted or ended) is not released again, only recorded."""
    spec = pipeline.spec.release
    current = release_of_record(context.instance, pipeline)
    if current is not None and current.version == version:
        release = current
        if not current.active:
            context.log.warning(f"v{version}'s release already {current.status} ({current.reason}): "
                                "it is not released again")
    else:
        end_superseded(context, pipeline, res, version, f"started a {spec.mode} release")
        release = Release(version=version, champion=champion, mode=spec.mode,
                          canary_fraction=spec.canary_fraction, started_at=time.time())
    if release.active:
        # Tags first, then the alias the server follows: a crash in between leaves a tagged
        # version no alias points at, which a re-run finishes.
        res.registry.set_tags(pipeline.model_name, version, release.to_tags())
        res.registry.set_alias(pipeline.model_name, CHALLENGER, version)
        context.log.info(release.describe())
    record = {"version": version, "champion": champion, "approval": approval.value, "run_id": context.run.run_id,
              "release": release.to_dict()}
    uri = res.storage.write_json(pipeline.layout.registration(version), record)
    info = res.registry.get_version(pipeline.model_name, version)
    metadata = {
        "model_name": info.name,
        MODEL_VERSION: champion,
        "alias": "champion",
        "changed": False,
        "bootstrap": False,
        **release_metadata(release),
        "candidate_approval": approval.value,
        "mlflow_version": dg.MetadataValue.url(res.registry.version_url(info.name, info.version)),
        "registration_uri": dg.MetadataValue.path(uri),
    }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(f"v{champion}-release-v{version}"))


def release_metadata(release: Release) -> dict:
    return {
        RELEASE: dg.MetadataValue.json(release.to_dict()),
        RELEASE_VERSION: release.version,
        RELEASE_STATE: release.status,
        RELEASE_MODE: release.mode,
        "release_summary": release.describe(),
    }


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
        "tags": table(
            [{"tag": k, "value": v} for k, v in sorted(info.tags.items())
             if k not in ("gate_message", "bundle_manifest", "rejection_reason")]
        ),
        "registration_uri": dg.MetadataValue.path(uri),
    }
