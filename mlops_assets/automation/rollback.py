"""`<name>_rollback_job`: move `champion` back to a previously approved version, audited."""


import dagster as dg
from pydantic import Field

from mlops_assets.champion_record import recorded_for_request, recover_and_record
from mlops_assets.core.gate import Approval
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.registry import CHAMPION, VersionInfo
from mlops_assets.signals import APPROVAL, MODEL_VERSION, ROLLED_BACK_FROM
from mlops_assets.state import champion_of_record


def _promotable(version: VersionInfo) -> bool:
    if version.tags.get("rolled_back") == "true":
        return False
    try:
        return Approval(version.tags.get(APPROVAL, "")).promotable
    except ValueError:
        return False


class RollbackError(RuntimeError):
    pass


class RollbackConfig(dg.Config):
    reason: str = Field(description="Why: recorded on both versions. Required.")
    to_version: str | None = Field(None, description="Target version; default: the previous approved one.")


def choose_rollback_target(versions: list[VersionInfo], current: VersionInfo, to_version: str | None) -> VersionInfo:
    """The version `champion` should move back to; refuses anything never approved."""
    by_version = {v.version: v for v in versions}
    if to_version is not None:
        target = by_version.get(str(to_version))
        if target is None:
            raise RollbackError(f"to_version {to_version} does not exist")
        if target.version == current.version:
            raise RollbackError(f"version {to_version} is already the champion")
        if not _promotable(target):
            raise RollbackError(
                f"version {to_version} was never approved (approval={target.tags.get('approval')}); "
                "only approved or forced versions can become champion"
            )
        return target
    previous = current.tags.get("previous_champion")
    if previous and previous in by_version and _promotable(by_version[previous]):
        return by_version[previous]
    older = [v for v in versions if int(v.version) < int(current.version) and _promotable(v)]
    if not older:
        raise RollbackError(f"no approved version before champion v{current.version} to roll back to")
    return max(older, key=lambda v: int(v.version))


def build_rollback_job(pipeline: Pipeline) -> dg.JobDefinition:
    @dg.op(name=f"{pipeline.name}_rollback_champion", required_resource_keys={pipeline.registry_key, pipeline.notifier_key})
    def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig) -> None:
        if not config.reason.strip():
            raise RollbackError("a rollback needs a reason")
        res = pipeline.resources(context)
        # A move a killed run left half done (this request's earlier attempt, another rollback,
        # a promotion) is finished and recorded first, once, by whoever finishes it.
        repaired = recover_and_record(context.instance, pipeline, res.registry,
                                      recorded_by="the rollback job")
        if repaired:
            context.log.warning(repaired)
        # A re-execution of a rollback already recorded (by its run, or by a recovery that
        # finished it) must not roll back again: the champion of record has moved on since.
        done = recorded_for_request(context.instance, pipeline, context.run, rollback=True)
        if done is not None:
            context.log.info(f"this rollback is already recorded (v{done.metadata[ROLLED_BACK_FROM].value} -> "
                             f"v{done.metadata[MODEL_VERSION].value}): nothing left to do")
            return
        # The champion of record (the last promotion or rollback this pipeline recorded), so a
        # re-run after a crash rolls back from the same version to the same target.
        recorded = champion_of_record(context.instance, pipeline)
        current = (res.registry.get_version(pipeline.model_name, recorded) if recorded
                   else res.registry.champion(pipeline.model_name))
        if current is None:
            raise RollbackError(f"model '{pipeline.model_name}' has no champion to roll back")
        target = choose_rollback_target(res.registry.list_versions(pipeline.model_name), current, config.to_version)
        result = res.registry.rollback(pipeline.model_name, target.version, from_version=current.version,
                                       run_id=context.run.run_id, reason=config.reason)
        res.notifier.send(
            "rollback", f"{pipeline.model_name}: champion v{current.version} -> v{target.version}", config.reason,
        )
        context.log_event(dg.AssetMaterialization(
            asset_key=pipeline.key(Stage.REGISTERED_MODEL),
            description=f"rollback: v{current.version} -> v{target.version}",
            metadata={"model_name": pipeline.model_name, MODEL_VERSION: target.version, "alias": CHAMPION,
                      ROLLED_BACK_FROM: current.version, APPROVAL: target.tags.get(APPROVAL, ""),
                      "rollback_reason": config.reason, "promotion_id": result.intent_id or ""},
        ))

    @dg.job(name=pipeline.job("rollback"), description="Move 'champion' back to a previously approved version.")
    def rollback_job():
        rollback_champion()

    return rollback_job
