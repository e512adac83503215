"""`evaluation_report` and its blocking `gate` check.

Like TFX's Evaluator: the report "blesses" the candidate or not. The candidate is the version
`trained_model` logged in this run (read from its materialization, never from an alias).
"""


import math
import tempfile
from pathlib import Path

import dagster as dg

from mlops_assets.core.evaluation import EvaluationResult
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.registry import CandidateRef
from mlops_assets.signals import (
    APPROVAL,
    CHAMPION_VERSION,
    GATE_PASSED,
    MLFLOW_EXPERIMENT_ID,
    MLFLOW_RUN_ID,
    MODEL_VERSION,
    TRAINING_SET,
)
from mlops_assets.stages.base import stage_asset, upstream_materialization
from mlops_assets.stages.metadata import (
    metrics_table,
    mlflow_artifact_url,
    model_training_view,
    plot_metadata,
    table,
)
from mlops_assets.state import value

GATE_CHECK = "gate"


class EvaluationInputError(RuntimeError):
    pass


def build_evaluation_report_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    spec = pipeline.spec
    key = pipeline.key(Stage.EVALUATION_REPORT)
    gate = dg.AssetCheckSpec(GATE_CHECK, asset=key, blocking=True,
                             description="Release gate: every configured rule must pass.")

    @stage_asset(pipeline, Stage.EVALUATION_REPORT, check_specs=[gate],
                 resources={pipeline.storage_key, pipeline.registry_key, pipeline.notifier_key})
    def evaluation_report(context: dg.AssetExecutionContext):
        from mlops_assets.core.evaluation import evaluate_candidate

        res = pipeline.resources(context)
        trained = upstream_materialization(context, pipeline.key(Stage.TRAINED_MODEL))
        ref = candidate_from(trained, pipeline)
        bundle = res.registry.load_bundle(ref.model_name, ref.version)
        holdout = res.storage.read_parquet(pipeline.layout.holdout(ref.version))
        champion = res.registry.champion(pipeline.model_name)
        champion_bundle = None
        if champion is not None and champion.version != ref.version:
            champion_bundle = res.registry.load_bundle(pipeline.model_name, champion.version)
        champion_holdout = None
        if champion_bundle is not None and res.storage.exists(pipeline.layout.holdout(champion.version)):
            champion_holdout = res.storage.read_parquet(pipeline.layout.holdout(champion.version))
        result = evaluate_candidate(spec, bundle, holdout, champion_bundle,
                                    champion.version if champion_bundle else None,
                                    champion_holdout=champion_holdout,
                                    rolled_back_version=rolled_back_twin(context, pipeline, trained))
        edge = edge_report(res.registry.bundle_dir(ref.model_name, ref.version))
        report = {"version": ref.version, **result.to_dict(), "edge": edge["summary"]}
        uri = res.storage.write_json(pipeline.layout.evaluation(ref.version), report)
        plots = record_evaluation(pipeline, res, ref, result, report)
        decision = result.decision
        if not decision.passed:
            res.notifier.send("gate_failed", f"{spec.name}: v{ref.version} held by the gate", decision.message(),
                              {"champion": result.champion_version or "none"})
        return dg.MaterializeResult(
            metadata={**evaluation_metadata(res, ref, result, uri, plots), **edge["metadata"]},
            check_results=[dg.AssetCheckResult(
                check_name=GATE_CHECK, passed=decision.passed, severity=dg.AssetCheckSeverity.ERROR,
                description=decision.message(), metadata=gate_check_metadata(ref, result, plots),
            )],
            data_version=dg.DataVersion(f"v{ref.version}-{'pass' if decision.passed else 'fail'}"),
        )

    return evaluation_report


def edge_report(bundle_dir) -> dict:
    """Size, speed and metric delta of the edge variants stored in the bundle (if any)."""
    from mlops_assets.core.edge import load_variants

    found = load_variants(bundle_dir)
    if not found:
        return {"summary": None, "metadata": {}}
    rows = [{"variant": v.name, "shipped": v.shipped, **{k: v.summary.get(k) for k in (
        "size_bytes", "size_ratio", "metric_delta", "max_abs_score_diff", "batch_speedup")},
        "verdict": v.decision.message()}
        for v in found.values()]
    return {"summary": rows, "metadata": {
        "edge_variants": table(rows),
        "edge_shipped": ", ".join(n for n, v in found.items() if v.shipped) or "none",
    }}


def rolled_back_twin(context, pipeline: Pipeline, trained) -> str | None:
    """A rolled-back version built from exactly this candidate's training set, if any."""
    from mlops_assets.state import version_records

    identity = value(trained, TRAINING_SET)
    twins = [r.version for r in version_records(context.instance, pipeline)
             if r.rolled_back and r.training_set.identity == identity]
    return twins[-1] if identity is not None and twins else None


def candidate_from(trained: dg.AssetMaterialization | None, pipeline: Pipeline) -> CandidateRef:
    version, run_id = value(trained, MODEL_VERSION), value(trained, MLFLOW_RUN_ID)
    if version is None or run_id is None:
        raise EvaluationInputError(
            f"no trained model to evaluate: materialize {pipeline.key(Stage.TRAINED_MODEL).to_user_string()} first"
        )
    return CandidateRef(pipeline.model_name, str(version), str(run_id), str(value(trained, MLFLOW_EXPERIMENT_ID, "")))


PLOT_TITLES = {"roc": "ROC curve", "pr": "Precision-recall curve", "calibration": "Calibration",
               "feature_importance": "Permutation importance", "confusion": "Confusion matrix",
               "residuals": "Residuals"}
PLOTS_FOLDER = "evaluation/plots"


def record_evaluation(pipeline: Pipeline, res, ref: CandidateRef, result: EvaluationResult, report: dict) -> dict:
    """Plots to the artifact store and, with metrics, report and verdict, to the version's MLflow
    run. Returns {"uris": {name: uri}, "images": {metadata key: embedded plot}}."""
    from mlops_assets.core.plots import evaluation_plots

    decision = result.decision
    tags = {GATE_PASSED: str(decision.passed).lower(), "gate_message": decision.message()[:4000],
            "gate_evaluated_by_run": ref.run_id}
    if not decision.passed:
        # A rejection is final for this version: run and version both say so. (An approval is
        # written by the promotion, when the champion alias actually moves.)
        tags.update({APPROVAL: decision.approval.value, "rejection_reason": decision.message()[:4000]})
    with tempfile.TemporaryDirectory(prefix="mlops-eval-") as tmp:
        plots = evaluation_plots(pipeline.spec.task, result.y, result.scores, result.importance, tmp,
                                 champion_score=result.champion_scores)
        uris = {name: res.storage.write_file(pipeline.layout.plot(ref.version, Path(path).name), path)
                for name, path in plots.items()}
        images = plot_metadata(plots, PLOT_TITLES, uris)
        res.registry.record_evaluation(
            ref, metrics={f"holdout_{k}": v for k, v in result.metrics.items()}, report=report,
            artifacts=[(PLOTS_FOLDER, Path(p)) for p in plots.values()], tags=tags,
        )
    return {"uris": uris, "images": images}


def gate_rules_table(decision) -> dg.TableMetadataValue:
    return table([{"rule": r.name, "verdict": "pass" if r.passed else ("warn" if r.severity == "warning" else "FAIL"),
                   "value": r.value, "limit": r.limit, "severity": r.severity, "detail": r.detail}
                  for r in decision.rules])


def gate_check_metadata(ref: CandidateRef, result: EvaluationResult, plots: dict) -> dict:
    """What the gate check shows: its rules, the metrics it judged, the plots, the main numbers."""
    return {
        MODEL_VERSION: ref.version,
        "rules": gate_rules_table(result.decision),
        "metrics": metrics_table(result.metrics, result.champion_metrics),
        **{f"holdout_{k}": v for k, v in result.metrics.items() if not math.isnan(v)},
        **plots["images"],
    }


def evaluation_metadata(res, ref: CandidateRef, result: EvaluationResult, report_uri: str, plots: dict) -> dict:
    decision = result.decision
    run_url = model_training_view(res.registry.run_url(ref.experiment_id, ref.run_id))
    metadata = {
        MODEL_VERSION: ref.version,
        CHAMPION_VERSION: result.champion_version or "none",
        "holdout_rows": result.n_holdout,
        "metrics": metrics_table(result.metrics, result.champion_metrics),
        "gate": gate_rules_table(decision),
        "gate_message": decision.message(),
        GATE_PASSED: decision.passed,
        APPROVAL: decision.approval.value,
        "onnx_parity_max_abs_diff": result.parity_max_abs_diff,
        "report_uri": dg.MetadataValue.path(report_uri),
        "mlflow_run": dg.MetadataValue.url(run_url),
        "mlflow_version": dg.MetadataValue.url(model_training_view(res.registry.version_url(ref.model_name,
                                                                                            ref.version))),
        "mlflow_plots": dg.MetadataValue.url(mlflow_artifact_url(run_url, PLOTS_FOLDER)),
    }
    metadata.update({f"holdout_{k}": v for k, v in result.metrics.items() if not math.isnan(v)})
    if result.latency:
        metadata.update({k: round(v, 4) for k, v in result.latency.items()})
    metadata.update(plots["images"])
    metadata["plot_uris"] = dg.MetadataValue.json(plots["uris"])
    if result.importance:
        top = sorted(result.importance.items(), key=lambda kv: -kv[1])[:20]
        metadata["permutation_importance"] = table([{"feature": k, "metric_drop": v} for k, v in top])
    if result.fairness:
        fair = result.fairness
        metadata["slices"] = table(fair.groups)
        metadata["fairness_gap"] = fair.main_metric_gap
        metadata["fairness_worst_to_best_ratio"] = fair.worst_to_best_ratio
        if fair.demographic_parity_difference is not None:
            metadata["demographic_parity_difference"] = fair.demographic_parity_difference
        if fair.equal_opportunity_difference is not None:
            metadata["equal_opportunity_difference"] = fair.equal_opportunity_difference
    return metadata
