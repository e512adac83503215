"""PyTorch MLP trainer for tabular data, with checkpoint/resume and a float64 ONNX export.

Design choices (see ``mlp_model`` for the preprocessing the network carries):

* Training runs in float32 on the chosen device. The best weights are then cast
  to float64 on CPU; native predictions, ``native_bytes`` and the ONNX graph all
  use that float64 network, so ONNX and native agree to ~1e-12, not ~1e-6.
* Early stopping monitors the validation loss (the training loss when there are
  no validation rows); an improvement must beat the best by a relative 1e-4.
  The best weights are kept. A ReduceLROnPlateau scheduler halves the learning
  rate after ``max(1, patience // 2)`` epochs without improvement.
* Determinism: the seed fixes weight init, the per-epoch shuffle (its own
  ``torch.Generator``) and dropout. Global torch RNG state is forked and
  restored, and the thread count is restored, so callers are unaffected.
  Batching is done by hand on in-memory tensors (no DataLoader workers).
* Checkpoints: with ``checkpoint_dir``, the full training state is written
  atomically after every epoch to ``<checkpoint_dir>/mlp_checkpoint.pt``. A run
  whose fingerprint (content hash of the data, task, features, config except
  max_epochs/device/num_threads, seed) matches resumes after the last finished
  epoch and reproduces the uninterrupted run exactly (on the same device). A
  mismatched or unreadable checkpoint is ignored and overwritten. The checkpoint
  is deleted once the model has been exported successfully.
  ``params['resumed_from_epoch']`` is the number of epochs the run resumed after
  (None for a fresh start); ``params['checkpoint']`` is one of 'disabled',
  'fresh', 'resumed', 'stale_ignored', 'unreadable_ignored'.
* Feature importance is not computed for the MLP (empty dict).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from mlops_assets.core.trainers.base import TrainedModel, TrainingDataError, check_training_labels

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "mlp_checkpoint.pt"
_NOT_FINGERPRINTED = {"max_epochs", "device", "num_threads"}
_EVAL_BATCH = 8192


@dataclass(frozen=True)
class MLPConfig:
    hidden_sizes: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    max_epochs: int = 50
    early_stopping_patience: int = 5
    embedding_dim: int | None = None   # None -> min(16, (k+1)//2+1) per categorical; 0 -> one-hot
    device: str = "auto"               # 'auto' -> cuda if available else cpu
    num_threads: int = 2

    @classmethod
    def from_spec(cls, spec) -> MLPConfig:
        """Build from any object with the same attribute names (e.g. the spec's MLPSpec)."""
        values = {f.name: getattr(spec, f.name) for f in fields(cls) if hasattr(spec, f.name)}
        if "hidden_sizes" in values:
            values["hidden_sizes"] = tuple(values["hidden_sizes"])
        return cls(**values)


def embedding_width(cardinality: int, embedding_dim: int | None) -> int:
    if embedding_dim is None:
        return min(16, (cardinality + 1) // 2 + 1)
    return int(embedding_dim)


def train_mlp(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    task: str,
    feature_names: list[str],
    categorical: dict[int, int],
    config: MLPConfig,
    seed: int,
    target_name: str = "target",
    num_class: int | None = None,
    checkpoint_dir: str | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train, early-stop on validation loss, export to ONNX.

    `on_epoch(epoch, losses)` is called after each epoch's checkpoint is written (progress
    in the run log; an exception it raises stops training with the checkpoint on disk)."""
    check_training_labels(y_train, task, target_name, num_class)
    X_train, X_valid, y_train, y_valid, num_class = _check_inputs(
        X_train, y_train, X_valid, y_valid, task, feature_names, categorical, target_name, num_class
    )
    import torch

    from mlops_assets.core.trainers import mlp_model

    device = _resolve_device(config.device, torch)
    arch = _architecture(X_train, task, num_class, categorical, config)
    stats = _statistics(X_train, y_train, arch, task)
    fingerprint = _fingerprint((X_train, y_train, X_valid, y_valid), task, feature_names,
                               categorical, config, seed, num_class)
    old_threads = torch.get_num_threads()
    start = time.perf_counter()
    rng_devices = [device] if device.type == "cuda" else []
    try:
        torch.set_num_threads(config.num_threads)
        with torch.random.fork_rng(devices=rng_devices), _deterministic(torch, device):
            torch.manual_seed(seed)
            model = mlp_model.TabularMLP(arch)
            model.load_state_dict({**model.state_dict(), **stats})
            model = model.float().to(device)
            loop = _Loop(torch, model, config, task, device, seed,
                         (X_train, y_train, X_valid, y_valid))
            ckpt_path = os.path.join(checkpoint_dir, CHECKPOINT_FILE) if checkpoint_dir else None
            status, resumed = loop.restore(ckpt_path, fingerprint)
            loop.run(ckpt_path, fingerprint, on_epoch)
        seconds = time.perf_counter() - start
        model = model.cpu().double().eval()
        model.load_state_dict({**loop.best_state, **stats})   # statistics back at full float64
        head = mlp_model.ScoreHead(model, task).eval()
        native = mlp_model.serialise(model, task)
        onnx_bytes = mlp_model.export_onnx(head, feature_names, task)
    finally:
        torch.set_num_threads(old_threads)
    if ckpt_path and os.path.exists(ckpt_path):
        os.remove(ckpt_path)
    params = {
        **asdict(config), "hidden_sizes": list(config.hidden_sizes), "trainer": "mlp", "task": task,
        "seed": seed, "num_class": num_class, "device_used": str(device),
        "embedding_dims": list(arch["embedding_dims"]), "missing_indicator_columns":
        [feature_names[arch["numeric_columns"][p]] for p in arch["indicator_positions"]],
        "best_epoch": loop.best_epoch, "epochs_run": loop.epoch,
        "stopped_early": loop.stopped_early,
        "resumed_from_epoch": resumed, "checkpoint": status, "fingerprint": fingerprint,
    }
    return TrainedModel(
        trainer="mlp", task=task, feature_names=list(feature_names), native_bytes=native,
        native_format="pt", onnx_bytes=onnx_bytes, params=params,
        predict=lambda X: mlp_model.predict(head, X), best_iteration=loop.best_epoch,
        train_seconds=seconds, history={k: list(v) for k, v in loop.history.items()},
    )


def _check_inputs(X_train, y_train, X_valid, y_valid, task, feature_names, categorical, target,
                  num_class):
    if task not in ("binary", "multiclass", "regression"):
        raise ValueError(f"unknown task '{task}' (expected binary, multiclass or regression)")
    X_train = np.ascontiguousarray(X_train, dtype=np.float64)
    X_valid = np.ascontiguousarray(X_valid, dtype=np.float64).reshape(-1, X_train.shape[1])
    y_train = np.asarray(y_train, dtype=np.float64).ravel()
    y_valid = np.asarray(y_valid, dtype=np.float64).ravel()
    n_features = X_train.shape[1]
    if len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature names for {n_features} columns")
    if len(X_train) != len(y_train) or len(X_valid) != len(y_valid):
        raise ValueError("feature and label row counts differ")
    for col, k in categorical.items():
        if not 0 <= col < n_features or int(k) < 1:
            raise ValueError(f"categorical column {col} with cardinality {k} is invalid")
    if len(y_valid) and not np.isfinite(y_valid).all():
        raise TrainingDataError(f"target '{target}': NaN or infinite labels in the validation rows")
    if task == "binary":
        for name, y in (("training", y_train), ("validation", y_valid)):
            bad = np.setdiff1d(np.unique(y), [0.0, 1.0])
            if bad.size:
                raise TrainingDataError(
                    f"target '{target}': binary labels must be 0/1, {name} rows have {bad[:5]}")
    if task == "multiclass":
        if num_class is None:
            num_class = int(max(y_train.max(), y_valid.max(initial=0))) + 1
        for name, y in (("training", y_train), ("validation", y_valid)):
            if ((y < 0) | (y >= num_class) | (y != np.floor(y))).any():
                raise TrainingDataError(
                    f"target '{target}': {name} labels must be class indices 0..{num_class - 1}")
    return X_train, X_valid, y_train, y_valid, num_class


def _resolve_device(name: str, torch):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


@contextlib.contextmanager
def _deterministic(torch, device):
    """Deterministic kernels on CUDA. CPU kernels used here are deterministic already, and
    ``use_deterministic_algorithms`` imports torch._dynamo (~4 s), so CPU skips it."""
    if device.type != "cuda":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def _architecture(X, task, num_class, categorical, config) -> dict:
    cat_cols = sorted(int(c) for c in categorical)
    num_cols = [c for c in range(X.shape[1]) if c not in set(cat_cols)]
    had_missing = ~np.isfinite(X[:, num_cols]).all(axis=0) if num_cols else np.zeros(0, bool)
    cards = [int(categorical[c]) for c in cat_cols]
    return {
        "n_features": int(X.shape[1]),
        "numeric_columns": num_cols,
        "indicator_positions": [int(p) for p in np.flatnonzero(had_missing)],
        "categorical_columns": cat_cols,
        "cardinalities": cards,
        "embedding_dims": [embedding_width(k, config.embedding_dim) for k in cards],
        "hidden_sizes": [int(h) for h in config.hidden_sizes],
        "dropout": float(config.dropout),
        "n_outputs": int(num_class) if task == "multiclass" else 1,
    }


def _statistics(X, y, arch, task) -> dict:
    """Train-row means/stds (missing ignored; constant or all-missing columns get std 1)."""
    import torch

    xn = X[:, arch["numeric_columns"]]
    finite = np.isfinite(xn)
    count = finite.sum(axis=0)
    safe = np.where(finite, xn, 0.0)
    mean = np.divide(safe.sum(axis=0), count, out=np.zeros(xn.shape[1]), where=count > 0)
    var = np.divide((np.where(finite, xn - mean, 0.0) ** 2).sum(axis=0), count,
                    out=np.zeros(xn.shape[1]), where=count > 0)
    std = np.sqrt(var)
    std = np.where(std > 1e-12, std, 1.0)
    y_mean, y_std = (float(y.mean()), float(y.std()) or 1.0) if task == "regression" else (0.0, 1.0)
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    return {"num_mean": t(mean), "num_std": t(std), "y_mean": t(y_mean), "y_std": t(y_std)}


def _fingerprint(arrays, task, names, categorical, config, seed, num_class) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(str(a.shape).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    cfg = {k: v for k, v in asdict(config).items() if k not in _NOT_FINGERPRINTED}
    meta = {"task": task, "names": list(names), "config": cfg, "seed": int(seed),
            "categorical": sorted((int(k), int(v)) for k, v in categorical.items()),
            "num_class": num_class, "version": 1}
    digest.update(json.dumps(meta, sort_keys=True, default=list).encode())
    return digest.hexdigest()[:24]


class _Loop:
    """The epoch loop and every piece of state a checkpoint must carry."""

    def __init__(self, torch, model, config, task, device, seed, data):
        self.torch, self.model, self.config = torch, model, config
        self.task, self.device = task, device
        X_train, y_train, X_valid, y_valid = data
        self.X = torch.from_numpy(X_train).float().to(device)
        self.y = self._labels(y_train)
        self.Xv = torch.from_numpy(X_valid).float().to(device)
        self.yv = self._labels(y_valid)
        self.y_mean, self.y_std = float(model.y_mean), float(model.y_std)
        if task == "binary":
            self.loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
        elif task == "multiclass":
            self.loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
        else:
            self.loss_fn = torch.nn.MSELoss(reduction="sum")
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=0.5,
            patience=max(1, config.early_stopping_patience // 2))
        self.shuffle = torch.Generator().manual_seed(seed)
        self.epoch, self.best_epoch, self.bad_epochs, self.best_loss = 0, 0, 0, float("inf")
        self.best_state = self._weights()
        self.stopped_early = False
        self.history: dict[str, list[float]] = {
            "train_loss": [], "valid_loss": [], "learning_rate": []}

    def _labels(self, y):
        t = self.torch.from_numpy(y)
        return (t.long() if self.task == "multiclass" else t.float().unsqueeze(1)).to(self.device)

    def _target(self, y):
        return (y - self.y_mean) / self.y_std if self.task == "regression" else y

    def _weights(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def _mean_loss(self, X, y) -> float:
        self.model.eval()
        total = 0.0
        with self.torch.no_grad():
            for s in range(0, len(X), _EVAL_BATCH):
                batch = slice(s, s + _EVAL_BATCH)
                total += float(self.loss_fn(self.model(X[batch]), self._target(y[batch])))
        return total / max(len(X), 1)

    def _train_epoch(self) -> float:
        torch, bs = self.torch, self.config.batch_size
        self.model.train()
        order = torch.randperm(len(self.X), generator=self.shuffle).to(self.device)
        total = 0.0
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            loss = self.loss_fn(self.model(self.X[idx]), self._target(self.y[idx]))
            self.optimizer.zero_grad(set_to_none=True)
            (loss / len(idx)).backward()
            self.optimizer.step()
            total += float(loss.detach())
        return total / len(self.X)

    def run(self, ckpt_path: str | None, fingerprint: str, on_epoch=None) -> None:
        patience = self.config.early_stopping_patience
        while self.epoch < self.config.max_epochs and not self.stopped_early:
            train_loss = self._train_epoch()
            monitored = self._mean_loss(self.Xv, self.yv) if len(self.Xv) else train_loss
            self.epoch += 1
            self.history["train_loss"].append(train_loss)
            self.history["valid_loss"].append(monitored if len(self.Xv) else float("nan"))
            self.history["learning_rate"].append(float(self.optimizer.param_groups[0]["lr"]))
            if self.best_epoch == 0 or monitored < self.best_loss - 1e-4 * abs(self.best_loss):
                self.best_loss, self.best_epoch, self.bad_epochs = monitored, self.epoch, 0
                self.best_state = self._weights()
            else:
                self.bad_epochs += 1
                self.stopped_early = self.bad_epochs >= patience
            self.scheduler.step(monitored)
            if ckpt_path:
                self.save(ckpt_path, fingerprint)
            if on_epoch is not None:
                on_epoch(self.epoch, {"train_loss": train_loss, "valid_loss": self.history["valid_loss"][-1]})

    def _state(self, fingerprint: str) -> dict:
        torch = self.torch
        return {
            "fingerprint": fingerprint, "epoch": self.epoch, "best_epoch": self.best_epoch,
            "best_loss": self.best_loss, "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "history": self.history, "model": self._weights(), "best_state": self.best_state,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "shuffle_rng": self.shuffle.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state(self.device)
                         if self.device.type == "cuda" else None),
        }

    def save(self, path: str, fingerprint: str) -> None:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mlp_checkpoint.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                self.torch.save(self._state(fingerprint), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    def restore(self, path: str | None, fingerprint: str) -> tuple[str, int | None]:
        if not path:
            return "disabled", None
        if not os.path.exists(path):
            return "fresh", None
        torch = self.torch
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: start over
            log.warning("ignoring unreadable MLP checkpoint %s: %s", path, exc)
            return "unreadable_ignored", None
        if state.get("fingerprint") != fingerprint:
            log.warning("ignoring MLP checkpoint %s: other data, config or seed", path)
            return "stale_ignored", None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch, self.best_epoch = int(state["epoch"]), int(state["best_epoch"])
        self.best_loss, self.bad_epochs = float(state["best_loss"]), int(state["bad_epochs"])
        self.stopped_early, self.best_state = bool(state["stopped_early"]), state["best_state"]
        self.history = {k: list(v) for k, v in state["history"].items()}
        log.info("resuming MLP training from %s after epoch %d", path, self.epoch)
        return "resumed", self.epoch

