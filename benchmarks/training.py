"""Training overhead of the asset code path vs bare `lightgbm.train`, and ONNX parity.

Same arrays (500k rows x 30 features), same params, same number of trees, in one
process. Runs are interleaved and the fastest of each is kept, so background load hits
both sides alike. Last line: JSON with train_overhead_ratio and onnx_parity_max_abs_diff.

    python benchmarks/training.py [--rows 500000] [--features 30] [--trees 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def make_data(rows: int, features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    X[rng.random(X.shape) < 0.02] = np.nan          # realistic gaps
    w = rng.normal(size=features)
    logit = np.nan_to_num(X) @ w / np.sqrt(features) + 0.5 * np.sin(np.nan_to_num(X[:, 0]) * 2)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import lightgbm as lgb

    from mlops_assets.core.scoring import OnnxScorer, check_parity
    from mlops_assets.core.trainers.lightgbm_trainer import lightgbm_params, train_lightgbm
    from mlops_assets.spec import LightGBMSpec

    X, y = make_data(args.rows, args.features)
    n_valid = args.rows // 10
    X_tr, y_tr, X_va, y_va = X[n_valid:], y[n_valid:], X[:n_valid], y[:n_valid]
    names = [f"f{i}" for i in range(args.features)]
    config = LightGBMSpec(num_boost_round=args.trees, num_leaves=63, early_stopping_rounds=None, num_threads=2)
    params = lightgbm_params(config, "binary", seed=42, num_class=None)

    bare_times, asset_times = [], []
    model = booster = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        train_set = lgb.Dataset(X_tr, y_tr, feature_name=names)
        valid_set = lgb.Dataset(X_va, y_va, reference=train_set)
        booster = lgb.train(params, train_set, num_boost_round=args.trees, valid_sets=[valid_set])
        bare_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        model = train_lightgbm(X_tr, y_tr, X_va, y_va, task="binary", feature_names=names, config=config, seed=42)
        asset_times.append(time.perf_counter() - t0)

    native = model.predict(X_va)
    onnx = OnnxScorer(model.onnx_bytes).predict(X_va)
    parity = check_parity(native, onnx, 1e-5)
    same_model = np.allclose(native, booster.predict(X_va), rtol=0, atol=1e-12)
    result = {
        "rows": args.rows, "features": args.features, "trees": args.trees,
        "bare_lightgbm_s": round(min(bare_times), 3),
        "asset_path_s": round(min(asset_times), 3),
        "train_overhead_ratio": round(min(asset_times) / min(bare_times), 4),
        "onnx_parity_max_abs_diff": float(parity.max_abs_diff),
        "same_predictions_as_bare": bool(same_model),
        "parity_rows": int(parity.n_rows),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
