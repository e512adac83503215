"""LightGBM trainer: deterministic (same data, spec and seed -> byte-identical model)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mlops_assets.core.trainers.base import TrainedModel, check_training_labels
from mlops_assets.spec import LightGBMSpec

OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
EVAL_METRICS = {"binary": "binary_logloss", "multiclass": "multi_logloss", "regression": "l2"}


def lightgbm_params(config: LightGBMSpec, task: str, seed: int, num_class: int | None) -> dict:
    params = {
        "objective": OBJECTIVES[task],
        "metric": EVAL_METRICS[task],
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "lambda_l2": config.lambda_l2,
        "num_threads": config.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,   # with deterministic=True: no thread-dependent histogram layout
        "verbosity": -1,
    }
    if task == "multiclass":
        params["num_class"] = num_class
    params.update(config.extra_params)
    return params


def train_lightgbm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    task: str,
    feature_names: list[str],
    config: LightGBMSpec,
    seed: int,
    target_name: str = "target",
    num_class: int | None = None,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """`on_iteration(iteration, validation metrics)` is called after every boosting round."""
    import lightgbm as lgb

    from mlops_assets.core.onnx_export import lightgbm_to_onnx

    check_training_labels(y_train, task, target_name, num_class)
    params = lightgbm_params(config, task, seed, num_class)
    train_set = lgb.Dataset(X_train, y_train, feature_name=feature_names, free_raw_data=False)
    valid_set = lgb.Dataset(X_valid, y_valid, reference=train_set)
    history: dict = {}
    callbacks = [lgb.record_evaluation(history)]
    if on_iteration is not None:
        def report(env) -> None:
            on_iteration(env.iteration + 1, {name: float(value) for _, name, value, _ in env.evaluation_result_list})

        callbacks.append(report)
    if config.early_stopping_rounds and len(y_valid):
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, verbose=False))
    start = time.perf_counter()
    booster = lgb.train(
        params, train_set, num_boost_round=config.num_boost_round,
        valid_sets=[valid_set] if len(y_valid) else None, valid_names=["valid"] if len(y_valid) else None,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees early stopping chose, so native, ONNX and saved model agree.
    model_str = booster.model_to_string(num_iteration=best)
    # Re-parse only when trees were dropped: parsing a large model costs real time.
    final = booster if best == booster.current_iteration() else lgb.Booster(model_str=model_str)
    gains = final.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    return TrainedModel(
        trainer="lightgbm",
        task=task,
        feature_names=list(feature_names),
        native_bytes=model_str.encode(),
        native_format="txt",
        onnx_bytes=lightgbm_to_onnx(final, feature_names),
        params={**params, "num_boost_round": config.num_boost_round, "best_iteration": best},
        predict=lambda X: final.predict(np.ascontiguousarray(X, dtype=np.float64)),
        best_iteration=best,
        feature_importance={n: float(g) / total for n, g in zip(feature_names, gains)},
        train_seconds=seconds,
        history={k: list(v) for k, v in history.get("valid", {}).items()},
    )
