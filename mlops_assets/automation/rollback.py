"""`<name>_rollback_job`: move `champion` back to a previously approved version, audited."""


import dagster as dg
from pydantic import Field

from mlops_assets.resources.registry import CHAMPION, VersionInfo
from mlops_assets.stages.common import Names

APPROVED = ("approved", "forced")


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
        if target.tags.get("approval") not in APPROVED:
            raise RollbackError(
                f"version {to_version} was never approved (approval={target.tags.get('approval')}); "
                "only approved or forced versions can become champion"
            )
        return target
    previous = current.tags.get("previous_champion")
    if previous and previous in by_version and by_version[previous].tags.get("approval") in APPROVED:
        return by_version[previous]
    older = [v for v in versions if int(v.version) < int(current.version) and v.tags.get("approval") in APPROVED]
    if not older:
        raise RollbackError(f"no approved version before champion v{current.version} to roll back to")
    return max(older, key=lambda v: int(v.version))


def build_rollback_job(names: Names) -> dg.JobDefinition:
    @dg.op(name=f"{names.pipeline}_rollback_champion", required_resource_keys={names.registry, names.notifier})
    def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig) -> None:
        if not config.reason.strip():
            raise RollbackError("a rollback needs a reason")
        registry = getattr(context.resources, names.registry)
        current = registry.version_by_alias(names.model_name, CHAMPION)
        if current is None:
            raise RollbackError(f"model '{names.model_name}' has no champion to roll back")
        target = choose_rollback_target(registry.list_versions(names.model_name), current, config.to_version)
        registry.set_tags(names.model_name, target.version, {
            "rollback_reason": config.reason, "rolled_back_from": current.version,
            "rolled_back_by_run": context.run_id, "previous_champion": current.version,
        })
        registry.set_tags(names.model_name, current.version, {
            "rolled_back": "true", "rollback_reason": config.reason,
        })
        registry.set_alias(names.model_name, CHAMPION, target.version)
        getattr(context.resources, names.notifier).send(
            "rollback", f"{names.model_name}: champion v{current.version} -> v{target.version}", config.reason,
        )
        context.log_event(dg.AssetMaterialization(
            asset_key=names.key("registered_model"),
            description=f"rollback: v{current.version} -> v{target.version}",
            metadata={"model_name": names.model_name, "model_version": target.version, "alias": CHAMPION,
                      "previous_champion": current.version, "approval": target.tags.get("approval", ""),
                      "rollback_reason": config.reason},
        ))

    @dg.job(name=names.job("rollback"), description="Move 'champion' back to a previously approved version.")
    def rollback_job():
        rollback_champion()

    return rollback_job
