"""The release sensor and `<name>_release_job`: finish a shadow or canary release.

The sensor gathers recorded facts (the release of record, the latest per-arm comparison
`model_performance` recorded for it, the gate's verdict, the champion of record) and asks the
pure rule (`core/release.py: decide_release`). On promote or end it launches the release job,
once per (candidate, action, attempt) run key; the tick says why it acted or waited.

The job moves nothing on its own judgement: it re-reads the release of record, checks the
run's (candidate, action) against it and then
  promote  checks the gate's approval on the version (MLflow `gate_passed`/`approval` and the
           evaluation materialization), moves `champion` through the registry's recorded-intent
           promotion (`MLflowRegistry.promote`) and tags the release promoted;
  end      tags the candidate's release ended with the reason and removes its `challenger`
           alias; the champion is untouched;
and logs the `registered_model` materialization that records it (like the rollback job), so
the champion of record and the release state move together. Re-running a finished action is
a no-op that records the same state again.
"""


import time

import dagster as dg
from pydantic import Field

from mlops_assets.champion_record import recover_and_record
from mlops_assets.core.gate import Approval
from mlops_assets.core.release import (
    END,
    ENDED,
    PROMOTE,
    PROMOTED,
    Release,
    ReleasePolicy,
    decide_release,
)
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.registry import CHALLENGER, CHAMPION
from mlops_assets.signals import (
    APPROVAL,
    DECISION_TAG,
    GATE_PASSED,
    MODEL_VERSION,
    RELEASE,
    RELEASE_ACTION_TAG,
    RELEASE_MODE,
    RELEASE_STATE,
    RELEASE_VERSION,
    RELEASE_VERSION_TAG,
    TRIGGER_TAG,
)
from mlops_assets.state import (
    IN_FLIGHT,
    champion_of_record,
    evaluation_of,
    latest_release_judgement,
    release_of_record,
    release_runs,
    value,
)

MAX_ATTEMPTS = 3


class ReleaseJobError(RuntimeError):
    pass


class ReleaseConfig(dg.Config):
    action: str | None = Field(None, description="promote or end; default: the run's mlops/release_action tag "
                                                 "(set by the release sensor).")
    version: str | None = Field(None, description="The candidate; default: the run's mlops/release_version tag.")
    reason: str | None = Field(None, description="Why (recorded on the version); default: the sensor's decision.")


def _release_record(release: Release) -> dict:
    return {RELEASE: dg.MetadataValue.json(release.to_dict()), RELEASE_VERSION: release.version,
            RELEASE_STATE: release.status, RELEASE_MODE: release.mode, "release_summary": release.describe()}


def build_release_job(pipeline: Pipeline) -> dg.JobDefinition:
    @dg.op(name=f"{pipeline.name}_finish_release",
           required_resource_keys={pipeline.registry_key, pipeline.storage_key, pipeline.notifier_key})
    def finish_release(context: dg.OpExecutionContext, config: ReleaseConfig) -> None:
        res = pipeline.resources(context)
        tags = context.run.tags
        action = config.action or tags.get(RELEASE_ACTION_TAG)
        version = config.version or tags.get(RELEASE_VERSION_TAG)
        reason = (config.reason or tags.get(DECISION_TAG) or "").strip()
        if action not in (PROMOTE, END) or not version:
            raise ReleaseJobError(f"a release run needs an action (promote or end) and a version; got "
                                  f"action={action!r}, version={version!r}")
        if not reason:
            raise ReleaseJobError("a release action needs a reason")
        release = release_of_record(context.instance, pipeline)
        if release is None or release.version != str(version):
            raise ReleaseJobError(f"v{version} is not under release (the release of record is "
                                  f"{release.describe() if release else 'none'})")
        done = {PROMOTE: PROMOTED, END: ENDED}[action]
        if not release.active and release.status != done:
            raise ReleaseJobError(f"cannot {action} v{version}: its release already {release.status}")
        model = pipeline.model_name
        if action == PROMOTE:
            finished = _promote(context, pipeline, res, release, reason)
        else:
            finished = release.finished(ENDED, reason) if release.active else release
            res.registry.set_tags(model, finished.version, finished.to_tags())
            challenger = res.registry.version_by_alias(model, CHALLENGER)
            if challenger is not None and challenger.version == finished.version:
                res.registry.delete_alias(model, CHALLENGER)
            champion = champion_of_record(context.instance, pipeline) or release.champion
            context.log_event(dg.AssetMaterialization(
                asset_key=pipeline.key(Stage.REGISTERED_MODEL),
                description=f"release ended: v{finished.version} not promoted; champion v{champion} stays",
                metadata={"model_name": model, MODEL_VERSION: champion, "alias": CHAMPION, "changed": False,
                          **_release_record(finished), "release_reason": finished.reason},
            ))
        res.notifier.send("release", f"{model}: v{finished.version} {finished.status}", finished.reason)
        context.log.info(finished.describe())

    @dg.job(name=pipeline.job("release"),
            description="Promote the candidate under release (through the gate's promotion) or end its release.")
    def release_job():
        finish_release()

    return release_job


def _promote(context, pipeline: Pipeline, res, release: Release, reason: str) -> Release:
    model, version = pipeline.model_name, release.version
    info = res.registry.get_version(model, version)
    evaluation = evaluation_of(context.instance, pipeline, version)
    try:
        approval = Approval(value(evaluation, APPROVAL, ""))
    except ValueError:
        approval = None
    if approval is None or not approval.promotable or info.tags.get(GATE_PASSED) != "true" \
            or value(evaluation, GATE_PASSED) is not True:
        raise ReleaseJobError(
            f"v{version} is not promotable: the evaluation says approval={value(evaluation, APPROVAL)}, "
            f"gate_passed={value(evaluation, GATE_PASSED)}; MLflow records gate_passed={info.tags.get(GATE_PASSED)}")
    repaired = recover_and_record(context.instance, pipeline, res.registry, promoting=version,
                                  recorded_by=f"the release promotion of v{version}")
    if repaired:
        context.log.warning(repaired)
    result = res.registry.promote(model, version, run_id=context.run.run_id, approval=approval.value)
    if result.recovered:
        context.log.warning(f"a half-done earlier promotion was {result.recovered} first")
    finished = release.finished(PROMOTED, reason) if release.active else release
    res.registry.set_tags(model, version, finished.to_tags())
    previous = result.previous if result.changed else release.champion
    uri = res.storage.write_json(pipeline.layout.registration(version), {
        "version": version, "previous_champion": previous, "approval": approval.value,
        "run_id": context.run.run_id, "promotion_id": result.intent_id, "release": finished.to_dict()})
    context.log_event(dg.AssetMaterialization(
        asset_key=pipeline.key(Stage.REGISTERED_MODEL),
        description=f"release promoted: champion v{previous} -> v{version}",
        metadata={"model_name": model, MODEL_VERSION: version, "alias": CHAMPION, "previous_champion": previous,
                  "changed": result.changed, APPROVAL: approval.value, "promotion_id": result.intent_id or "",
                  **_release_record(finished), "release_reason": finished.reason,
                  "mlflow_version": dg.MetadataValue.url(res.registry.version_url(model, version)),
                  "registration_uri": dg.MetadataValue.path(uri)},
    ))
    return finished


def decide_now(instance: dg.DagsterInstance, pipeline: Pipeline, now: float | None = None):
    """The release decision for the pipeline's current recorded state."""
    release = release_of_record(instance, pipeline)
    if release is None or not release.active:
        return release, decide_release(release=release, arms=None, policy=ReleasePolicy.from_spec(pipeline.spec.release),
                                       champion=None, approval=None, now=time.time() if now is None else now)
    return release, decide_release(
        release=release,
        arms=latest_release_judgement(instance, pipeline, release.version),
        policy=ReleasePolicy.from_spec(pipeline.spec.release),
        champion=champion_of_record(instance, pipeline),
        approval=value(evaluation_of(instance, pipeline, release.version), APPROVAL),
        now=time.time() if now is None else now,
    )


def build_release_sensor(pipeline: Pipeline, job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=pipeline.sensor("release"),
        job=job,
        minimum_interval_seconds=pipeline.spec.automation.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Finish a shadow or canary release: promote the candidate once delayed labels show it is no "
                    "worse than the champion on the same days, or end the release (worse, undecided too long, "
                    "champion moved). The tick says why it acted or waited.",
    )
    def release_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        release, decision = decide_now(context.instance, pipeline)
        if not decision.acts:
            return dg.SensorResult(skip_reason=decision.describe())
        busy = context.instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=list(IN_FLIGHT)), limit=1)
        if busy:
            return dg.SensorResult(skip_reason=f"{decision.describe()} -- held: release run {busy[0].run_id[:8]} "
                                               "is queued or running")
        runs = release_runs(context.instance, job.name, release.version, decision.action)
        attempts = sum(1 for r in runs if r.state == "failed")
        if attempts >= MAX_ATTEMPTS:
            return dg.SensorResult(skip_reason=f"{decision.describe()} -- gave up after {attempts} failed runs; "
                                               "see them, then run the release job by hand")
        context.log.info(decision.describe())
        return dg.SensorResult(run_requests=[dg.RunRequest(
            run_key=f"release:v{release.version}:{decision.action}:{attempts}",
            tags={TRIGGER_TAG: "release", RELEASE_VERSION_TAG: release.version,
                  RELEASE_ACTION_TAG: decision.action, DECISION_TAG: decision.reason[:1000]},
        )])

    return release_sensor
