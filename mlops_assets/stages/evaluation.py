"""`evaluation_report` with its blocking `gate` check, and `registered_model`.

Like TFX's Evaluator and Pusher: the report "blesses" the candidate or not, and the
registry step only ever promotes a blessed (or audited force-promoted) version.
"""


import math
import tempfile

import dagster as dg

from mlops_assets.core.bundle import ModelBundle
from mlops_assets.core.plots import evaluation_plots
from mlops_assets.resources.registry import CHALLENGER, CHAMPION
from mlops_assets.stages.common import Names, Paths, markdown_table, metrics_markdown

GATE_CHECK = "gate"


class PromotionError(RuntimeError):
    pass


def build_evaluation_asset(names: Names) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)
    key = names.key("evaluation_report")

    @dg.asset(
        key=key,
        group_name=spec.name,
        deps=[names.key("trained_model")],
        check_specs=[dg.AssetCheckSpec(GATE_CHECK, asset=key, blocking=True,
                                       description="Release gate: every configured rule must pass.")],
        kinds={"mlflow", "onnx"},
        code_version=names.code_version,
        required_resource_keys={names.storage, names.registry, names.notifier},
        description="Holdout metrics, slices, latency and champion comparison; the gate decides.",
    )
    def evaluation_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from mlops_assets.core.evaluation import evaluate_candidate

        storage = getattr(context.resources, names.storage)
        registry = getattr(context.resources, names.registry)
        candidate = registry.version_by_alias(names.model_name, CHALLENGER)
        if candidate is None:
            raise PromotionError(f"model '{names.model_name}' has no '{CHALLENGER}' version to evaluate")
        bundle = ModelBundle.load(registry.download_bundle(names.model_name, candidate.version))
        holdout = storage.read_parquet(paths.holdout(candidate.version))
        champion = registry.version_by_alias(names.model_name, CHAMPION)
        champion_bundle = None
        if champion is not None and champion.version != candidate.version:
            champion_bundle = ModelBundle.load(registry.download_bundle(names.model_name, champion.version))
        result = evaluate_candidate(
            spec, bundle, holdout, champion_bundle, champion.version if champion_bundle else None
        )
        decision = result.decision
        report = {"version": candidate.version, **result.to_dict()}
        uri = storage.write_json(paths.evaluation(candidate.version), report)

        plot_uris = {}
        with tempfile.TemporaryDirectory(prefix="mlops-eval-") as tmp:
            plots = evaluation_plots(spec.task, result.y, result.scores, result.importance, tmp,
                                     champion_score=result.champion_scores)
            with registry.activated() as mlflow:
                client = mlflow.MlflowClient()
                for name, value in result.metrics.items():
                    if not math.isnan(value):
                        client.log_metric(candidate.run_id, f"holdout_{name}", value)
                client.log_dict(candidate.run_id, report, "evaluation/report.json")
                for name, path in plots.items():
                    client.log_artifact(candidate.run_id, str(path), "evaluation/plots")
                    plot_uris[name] = storage.write_file(f"{paths.model_dir(candidate.version)}/plots/{path.name}", path)
        gate_tags = {"gate_passed": str(decision.passed).lower(), "gate_message": decision.message()[:4000]}
        if not decision.passed:
            gate_tags["approval"] = "rejected"
            gate_tags["rejection_reason"] = decision.message()[:4000]
            getattr(context.resources, names.notifier).send(
                "gate_failed", f"{spec.name}: v{candidate.version} held by the gate", decision.message(),
                {"champion": result.champion_version or "none"},
            )
        registry.set_tags(names.model_name, candidate.version, gate_tags)

        metadata = {
            "model_version": candidate.version,
            "champion_version": result.champion_version or "none",
            "holdout_rows": result.n_holdout,
            "metrics": dg.MetadataValue.md(metrics_markdown(result.metrics, result.champion_metrics)),
            "gate": dg.MetadataValue.md(decision.to_markdown()),
            "gate_passed": decision.passed,
            "onnx_parity_max_abs_diff": result.parity_max_abs_diff,
            "report_uri": dg.MetadataValue.path(uri),
            "mlflow_run": dg.MetadataValue.url(registry.run_url(_experiment_of(registry, candidate), candidate.run_id)),
        }
        metadata.update({f"holdout_{k}": v for k, v in result.metrics.items() if not math.isnan(v)})
        if result.latency:
            metadata.update({k: round(v, 4) for k, v in result.latency.items()})
        for name, uri in plot_uris.items():
            metadata[f"plot_{name}"] = dg.MetadataValue.path(uri)
        if result.importance:
            top = sorted(result.importance.items(), key=lambda kv: -kv[1])[:10]
            metadata["permutation_importance"] = dg.MetadataValue.md(
                markdown_table([{"feature": k, "metric_drop": v} for k, v in top]))
        if result.fairness:
            metadata["slices"] = dg.MetadataValue.md(markdown_table(result.fairness.groups))
            fair = result.fairness
            metadata["fairness_gap"] = fair.main_metric_gap
            metadata["fairness_worst_to_best_ratio"] = fair.worst_to_best_ratio
            if fair.demographic_parity_difference is not None:
                metadata["demographic_parity_difference"] = fair.demographic_parity_difference
            if fair.equal_opportunity_difference is not None:
                metadata["equal_opportunity_difference"] = fair.equal_opportunity_difference
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[dg.AssetCheckResult(
                check_name=GATE_CHECK, passed=decision.passed, severity=dg.AssetCheckSeverity.ERROR,
                description=decision.message(),
                metadata={"rules": dg.MetadataValue.md(decision.to_markdown()), "model_version": candidate.version},
            )],
            data_version=dg.DataVersion(f"v{candidate.version}-{'pass' if decision.passed else 'fail'}"),
        )

    return evaluation_report


def build_registry_asset(names: Names) -> dg.AssetsDefinition:
    spec = names.spec
    paths = Paths(spec.name)

    @dg.asset(
        key=names.key("registered_model"),
        group_name=spec.name,
        deps=[names.key("evaluation_report")],
        kinds={"mlflow"},
        code_version=names.code_version,
        required_resource_keys={names.storage, names.registry},
        description="The MLflow version the gate blessed; the 'champion' alias moves to it.",
    )
    def registered_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = getattr(context.resources, names.storage)
        registry = getattr(context.resources, names.registry)
        candidate = registry.version_by_alias(names.model_name, CHALLENGER)
        if candidate is None:
            current = registry.version_by_alias(names.model_name, CHAMPION)
            if current is None:
                raise PromotionError(f"model '{names.model_name}' has no '{CHALLENGER}' version to promote")
            context.log.info(f"no new candidate; champion stays v{current.version}")
            return dg.MaterializeResult(
                metadata={"model_name": names.model_name, "model_version": current.version,
                          "alias": CHAMPION, "changed": False},
                data_version=dg.DataVersion(f"v{current.version}"),
            )
        rel = paths.evaluation(candidate.version)
        if not storage.exists(rel):
            raise PromotionError(f"version {candidate.version} has no evaluation report; run evaluation_report")
        gate = storage.read_json(rel)["gate"]
        if not gate["passed"]:
            # Belt and braces: the blocking check already stops this in the same run.
            raise PromotionError(f"version {candidate.version} failed the gate: {gate['message']}")
        previous = registry.version_by_alias(names.model_name, CHAMPION)
        tags = {"approval": gate["approval"], "promoted_by_run": context.run_id}
        if gate["forced"]:
            tags["force_reason"] = gate["force_reason"]
        if previous is not None:
            tags["previous_champion"] = previous.version
        registry.set_tags(names.model_name, candidate.version, tags)
        registry.set_alias(names.model_name, CHAMPION, candidate.version)
        registry.client().delete_registered_model_alias(names.model_name, CHALLENGER)
        record = {"version": candidate.version, "previous_champion": previous.version if previous else None,
                  "approval": gate["approval"], "gate": gate, "run_id": context.run_id}
        uri = storage.write_json(paths.registration(candidate.version), record)
        context.log.info(f"champion: v{previous.version if previous else '-'} -> v{candidate.version}")
        info = registry.get_version(names.model_name, candidate.version)
        return dg.MaterializeResult(
            metadata={
                "model_name": names.model_name,
                "model_version": candidate.version,
                "alias": CHAMPION,
                "previous_champion": previous.version if previous else "none",
                "approval": gate["approval"],
                "bootstrap": gate["bootstrap"],
                "tags": dg.MetadataValue.md(markdown_table(
                    [{"tag": k, "value": v} for k, v in sorted(info.tags.items()) if k != "gate_message"]
                )),
                "registration_uri": dg.MetadataValue.path(uri),
            },
            data_version=dg.DataVersion(f"v{candidate.version}"),
        )

    return registered_model


def _experiment_of(registry, version) -> str:
    return registry.client().get_run(version.run_id).info.experiment_id
