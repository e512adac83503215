"""PyTorch MLP trainer: learning, float64 ONNX parity, determinism, checkpoint/resume.

Data are small (3k rows, 4 numeric + 2 categorical columns) and runs use one
thread and a few epochs, so the module stays fast on a busy machine.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import onnx
import pytest

from mlops_assets.core.scoring import OnnxScorer, check_parity, smoke_test
from mlops_assets.core.trainers import TrainingDataError, native_predict
from mlops_assets.core.trainers.mlp_trainer import (
    CHECKPOINT_FILE,
    MLPConfig,
    train_mlp,
)

# The network is exported in float64, so parity is far tighter than the 1e-4 gate.
PARITY_TOL = 1e-9
NAMES = ["n0", "n1", "n2", "n3", "c_five", "c_three"]
CATEGORICAL = {4: 5, 5: 3}
N_TRAIN, N_VALID, N_HOLD = 2000, 500, 500
FAST = MLPConfig(hidden_sizes=(32, 16), dropout=0.05, learning_rate=5e-3, batch_size=128,
                 max_epochs=8, early_stopping_patience=3, num_threads=1)


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    X = np.empty((n, len(NAMES)))
    X[:, :4] = rng.normal(size=(n, 4)) * [1.0, 2.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    X[:, 4] = rng.integers(0, 5, n)
    X[:, 5] = rng.integers(0, 3, n)
    X[rng.random(n) < 0.1, 0] = np.nan          # n0 has missing values in training
    X[rng.random(n) < 0.05, 4] = np.nan         # missing category
    return X


def _signal(X: np.ndarray) -> np.ndarray:
    z = np.nan_to_num(X[:, 0]) + 0.5 * (X[:, 1] - 5.0) - 0.02 * (X[:, 3] - 100.0)
    cat = np.array([-1.0, 0.0, 1.0, 2.0, -2.0, 0.5])[np.nan_to_num(X[:, 4], nan=5).astype(int)]
    return z + cat + 0.7 * (X[:, 5] == 1) + 1.0 * np.isnan(X[:, 0])


def make_task(task: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_VALID + N_HOLD
    X = _features(rng, n)
    s = _signal(X)
    if task == "binary":
        y = (s + rng.logistic(scale=0.3, size=n) > 0.3).astype(float)
    elif task == "multiclass":
        scores = np.column_stack([s, -s, 0.8 * (X[:, 5] == 2) + 0.3 * np.nan_to_num(X[:, 2] + 1)])
        y = np.argmax(scores + rng.gumbel(scale=0.3, size=scores.shape), axis=1).astype(float)
    else:
        y = 50.0 + 20.0 * s + rng.normal(scale=5.0, size=n)
    a, b = N_TRAIN, N_TRAIN + N_VALID
    return X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:]


def _holdout_with_gaps(X: np.ndarray) -> np.ndarray:
    """Holdout rows plus NaN in every column and unseen / out-of-range category codes."""
    X = X.copy()
    rng = np.random.default_rng(7)
    X[rng.random(X.shape) < 0.08] = np.nan      # includes n1..n3, never missing in training
    X[::9, 4] = 7.0                             # beyond the vocabulary
    X[::11, 5] = -1.0
    return X


def _train(task: str, config: MLPConfig = FAST, seed: int = 0, data_seed: int = 0, **kw):
    Xtr, ytr, Xva, yva, _, _ = make_task(task, data_seed)
    return train_mlp(Xtr, ytr, Xva, yva, task=task, feature_names=NAMES, categorical=CATEGORICAL,
                     config=config, seed=seed, num_class=3 if task == "multiclass" else None, **kw)


@functools.cache
def trained(task: str, embedding_dim: int | None = None):
    import dataclasses

    return _train(task, dataclasses.replace(FAST, embedding_dim=embedding_dim))


def _logloss(y, p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.mark.parametrize("embedding_dim", [None, 0], ids=["embeddings", "one_hot"])
def test_binary_learns_and_exports(embedding_dim):
    model = trained("binary", embedding_dim)
    *_, X_hold, y_hold = make_task("binary")
    p = model.predict(X_hold)
    assert p.shape == (len(X_hold),) and p.dtype == np.float64
    prior = np.full_like(y_hold, y_hold.mean())
    assert _logloss(y_hold, p) < _logloss(y_hold, prior) - 0.15
    assert np.mean((p > 0.5) == y_hold) > max(y_hold.mean(), 1 - y_hold.mean()) + 0.1
    widths = model.params["embedding_dims"]
    assert widths == ([0, 0] if embedding_dim == 0 else [min(16, (k + 1) // 2 + 1) for k in (5, 3)])
    assert model.params["missing_indicator_columns"] == ["n0"]
    assert model.native_format == "pt" and model.trainer == "mlp"


def test_multiclass_learns():
    model = trained("multiclass")
    *_, X_hold, y_hold = make_task("multiclass")
    p = model.predict(X_hold)
    assert p.shape == (len(X_hold), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    majority = np.bincount(y_hold.astype(int)).max() / len(y_hold)
    assert np.mean(p.argmax(axis=1) == y_hold) > majority + 0.15


def test_regression_learns_on_raw_target_scale():
    model = trained("regression")
    *_, X_hold, y_hold = make_task("regression")
    p = model.predict(X_hold)
    assert p.shape == (len(X_hold),)
    assert abs(p.mean() - y_hold.mean()) < 5.0            # de-standardised inside the model
    assert np.mean((p - y_hold) ** 2) < 0.3 * np.var(y_hold)


@pytest.mark.parametrize(
    "task,embedding_dim",
    [("binary", None), ("binary", 0), ("multiclass", None), ("regression", None)],
)
def test_onnx_parity_on_holdout_with_nan_and_unseen_codes(task, embedding_dim):
    model = trained(task, embedding_dim)
    *_, X_hold, _ = make_task(task)
    X = _holdout_with_gaps(X_hold)
    native = model.predict(X)
    scorer = OnnxScorer(model.onnx_bytes, threads=1)
    result = check_parity(native, scorer.predict(X), PARITY_TOL)
    assert result.passed, result
    smoke_test(model.onnx_bytes, len(NAMES))
    assert scorer.task == task and scorer.feature_names == NAMES
    # Out-of-range codes are routed exactly like missing ones.
    a, b = X[:20].copy(), X[:20].copy()
    a[:, 4], b[:, 4] = 42.0, np.nan
    np.testing.assert_array_equal(model.predict(a), model.predict(b))


def test_onnx_signature_and_metadata():
    model = trained("multiclass")
    proto = onnx.load_from_string(model.onnx_bytes)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "features" and out.name == "score"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert out.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value and dims[1].dim_value == len(NAMES)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "multiclass" and meta["producer"] == "mlops_assets"
    assert json.loads(meta["feature_names"]) == NAMES
    # Dynamic batch: a single row and a large batch both score.
    scorer = OnnxScorer(model.onnx_bytes)
    *_, X_hold, _ = make_task("multiclass")
    assert scorer.predict(X_hold[:1]).shape == (1, 3)
    assert scorer.predict(X_hold).shape == (len(X_hold), 3)


def test_native_predict_matches_trained_model():
    for task in ("binary", "regression"):
        model = trained(task)
        *_, X_hold, _ = make_task(task)
        X = _holdout_with_gaps(X_hold)
        reloaded = native_predict("mlp", model.native_bytes, X)
        np.testing.assert_array_equal(reloaded, model.predict(X))


def test_same_seed_is_deterministic():
    first, second = trained("binary"), _train("binary")
    *_, X_hold, _ = make_task("binary")
    X = _holdout_with_gaps(X_hold)
    np.testing.assert_array_equal(first.predict(X), second.predict(X))
    onnx_first = OnnxScorer(first.onnx_bytes).predict(X)
    np.testing.assert_array_equal(onnx_first, OnnxScorer(second.onnx_bytes).predict(X))
    assert first.history == second.history
    other = _train("binary", seed=1)
    assert not np.array_equal(first.predict(X), other.predict(X))


class KilledAt(RuntimeError):
    """Stands for the process dying right after an epoch's checkpoint was written."""


def _kill_after(epoch: int):
    def on_epoch(done: int, losses: dict) -> None:
        assert set(losses) == {"train_loss", "valid_loss"}
        if done >= epoch:
            raise KilledAt(f"stopped after epoch {done}")

    return on_epoch


def test_checkpoint_resume_continues_a_killed_run(tmp_path):
    import dataclasses

    config = dataclasses.replace(FAST, max_epochs=5, early_stopping_patience=10)
    uninterrupted = _train("binary", config)
    ckpt_dir = str(tmp_path / "ckpt")
    with pytest.raises(KilledAt):
        _train("binary", config, checkpoint_dir=ckpt_dir, on_epoch=_kill_after(2))
    assert os.path.exists(os.path.join(ckpt_dir, CHECKPOINT_FILE))
    assert not [f for f in os.listdir(ckpt_dir) if f.endswith(".tmp")]  # atomic: no temp files

    resumed = _train("binary", config, checkpoint_dir=ckpt_dir)
    assert resumed.params["checkpoint"] == "resumed"
    assert resumed.params["resumed_from_epoch"] == 2
    assert resumed.params["epochs_run"] == 5 and len(resumed.history["valid_loss"]) == 5
    assert not os.path.exists(os.path.join(ckpt_dir, CHECKPOINT_FILE))   # removed on success
    # Resuming reproduces the uninterrupted run exactly.
    *_, X_hold, _ = make_task("binary")
    np.testing.assert_array_equal(resumed.predict(X_hold), uninterrupted.predict(X_hold))
    assert resumed.history == uninterrupted.history


def test_stale_checkpoint_is_ignored(tmp_path):
    import dataclasses

    config = dataclasses.replace(FAST, max_epochs=3)
    ckpt_dir = str(tmp_path)
    with pytest.raises(KilledAt):
        _train("binary", config, seed=5, checkpoint_dir=ckpt_dir, on_epoch=_kill_after(1))
    other_seed = _train("binary", config, seed=6, checkpoint_dir=ckpt_dir)
    assert other_seed.params["checkpoint"] == "stale_ignored"
    assert other_seed.params["resumed_from_epoch"] is None
    assert other_seed.params["epochs_run"] == 3

    with pytest.raises(KilledAt):
        _train("binary", config, checkpoint_dir=ckpt_dir, on_epoch=_kill_after(1))
    wider = dataclasses.replace(config, hidden_sizes=(24,))
    assert _train("binary", wider, checkpoint_dir=ckpt_dir).params["checkpoint"] == "stale_ignored"

    (tmp_path / CHECKPOINT_FILE).write_bytes(b"truncated")
    unreadable = _train("binary", config, checkpoint_dir=ckpt_dir)
    assert unreadable.params["checkpoint"] == "unreadable_ignored"


def test_early_stopping_on_noise_labels():
    import dataclasses

    rng = np.random.default_rng(3)
    X = _features(rng, 1500)
    y = (rng.random(1500) < 0.5).astype(float)      # nothing to learn: validation loss plateaus
    config = dataclasses.replace(FAST, learning_rate=2e-2, max_epochs=40, early_stopping_patience=2)
    model = train_mlp(X[:1000], y[:1000], X[1000:], y[1000:], task="binary", feature_names=NAMES,
                      categorical=CATEGORICAL, config=config, seed=0)
    assert model.params["stopped_early"] is True
    assert model.params["epochs_run"] < 40
    assert model.params["epochs_run"] == model.best_iteration + 2
    best = model.history["valid_loss"][model.best_iteration - 1]
    assert best == min(model.history["valid_loss"])


def test_single_class_labels_raise_training_data_error():
    Xtr, ytr, Xva, yva, _, _ = make_task("binary")
    with pytest.raises(TrainingDataError, match="only one class"):
        train_mlp(Xtr, np.zeros_like(ytr), Xva, yva, task="binary", feature_names=NAMES,
                  categorical=CATEGORICAL, config=FAST, seed=0, target_name="churned")
    with pytest.raises(TrainingDataError, match="0/1"):
        train_mlp(Xtr, ytr * 2, Xva, yva, task="binary", feature_names=NAMES,
                  categorical=CATEGORICAL, config=FAST, seed=0)


def test_config_from_spec():
    from mlops_assets.spec import MLPSpec

    config = MLPConfig.from_spec(MLPSpec(hidden_sizes=[8, 4], embedding_dim=0))
    assert config.hidden_sizes == (8, 4) and config.embedding_dim == 0 and config.max_epochs == 50
