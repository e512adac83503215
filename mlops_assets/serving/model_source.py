"""Where the server gets its model, and how it follows the `champion` alias.

`ModelSource` is two calls: a cheap lookup of the version the alias points at, and loading
one version's verified bundle. `RegistryModelSource` is the only code in the server that
talks to the registry resource.

`ChampionWatcher` checks the alias every `poll_seconds`. When it moves, the new bundle is
loaded and smoke-tested off the request path (in a worker thread) and then swapped in by
assigning one attribute. Each request reads `watcher.current` once and uses that object for
encoding, scoring and the version it reports, so a response is always wholly one version.
A version that fails to load is not served: the old one keeps serving, the failure is logged
and counted, and the load is retried with a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mlops_assets.serving.served_model import ServedModel
from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_assets.core.bundle import ModelBundle

logger = logging.getLogger("mlops_assets.serving")

CHAMPION_ALIAS = "champion"
MAX_RETRY_FACTOR = 16     # a failing version is retried after at most 16 poll intervals


@runtime_checkable
class ModelSource(Protocol):
    def champion_version(self) -> str | None:
        """The version the alias points at now; None when there is none. Called every poll."""

    def load(self, version: str) -> ModelBundle:
        """That version's bundle, verified against the hashes recorded at registration."""


class RegistryModelSource:
    """`ModelSource` over the `MLflowRegistry` resource; the model name is the spec's name.

    The registry's API is being reworked (`champion_version` / `load_bundle` replace
    `version_by_alias` / `download_bundle`): this class is the one place that knows either.
    """

    def __init__(self, registry, model_name: str, *, alias: str = CHAMPION_ALIAS):
        self.registry, self.model_name, self.alias = registry, model_name, alias

    def champion_version(self) -> str | None:
        registry = self.registry
        if self.alias == CHAMPION_ALIAS and hasattr(registry, "champion_version"):
            found = registry.champion_version(self.model_name)
        elif self.alias == CHAMPION_ALIAS and hasattr(registry, "champion"):
            found = registry.champion(self.model_name)
        else:
            found = registry.version_by_alias(self.model_name, self.alias)
        if found is None:
            return None
        return str(getattr(found, "version", found))     # VersionInfo or a plain version string

    def load(self, version: str) -> ModelBundle:
        if hasattr(self.registry, "load_bundle"):
            return self.registry.load_bundle(self.model_name, version)
        from mlops_assets.core.bundle import ModelBundle

        return ModelBundle.load(self.registry.download_bundle(self.model_name, version))

    def __repr__(self) -> str:
        return f"RegistryModelSource({self.model_name}@{self.alias})"


class ChampionWatcher:
    """Holds the served model and swaps it when the alias moves."""

    def __init__(self, spec: PipelineSpec, source: ModelSource, *, poll_seconds: float, metrics=None,
                 prepare: Callable[[str, ModelBundle], ServedModel] | None = None,
                 onnx_threads: int | None = None):
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds!r}")
        self.spec, self.source, self.poll_seconds, self.metrics = spec, source, float(poll_seconds), metrics
        self._prepare = prepare or (lambda version, bundle: ServedModel.prepare(
            version, bundle, spec, onnx_threads=onnx_threads))
        self.current: ServedModel | None = None
        self.champion: str | None = None           # what the alias said at the last good lookup
        self.last_error: str | None = None
        self._failed_version: str | None = None
        self._failures = 0
        self._retry_at = 0.0

    def check_once(self) -> bool:
        """Look up the alias and load a new champion if it moved; True when a swap happened.
        Blocking (registry calls, file reads, ONNX session): run it off the event loop."""
        try:
            version = self.source.champion_version()
        except Exception as exc:  # noqa: BLE001  a registry outage must never take the served model down
            self._failed("lookup", None, f"champion lookup failed: {exc}")
            return False
        self.champion = version
        current = self.current
        if version is None:
            if current is not None and self.last_error != "alias":
                logger.warning("the %s alias of %s is gone; still serving version %s",
                               getattr(self.source, "alias", CHAMPION_ALIAS), self.spec.name, current.version)
            self.last_error = "alias" if current is not None else "no champion yet"
            return False
        if current is not None and version == current.version:
            return False
        if version == self._failed_version and time.monotonic() < self._retry_at:
            return False
        started = time.perf_counter()
        try:
            model = self._prepare(version, self.source.load(version))
        except Exception as exc:  # noqa: BLE001  any failure: keep serving the old version
            self._failed("load", version, f"version {version} could not be loaded: {exc}")
            return False
        self.current = model                      # the swap: one reference assignment
        self._failed_version, self._failures, self.last_error = None, 0, None
        if self.metrics is not None:
            self.metrics.model_swapped(version)
        logger.info("serving %s version %s (was %s; loaded in %.2f s)", self.spec.name, version,
                    current.version if current else "none", time.perf_counter() - started)
        return True

    def _failed(self, stage: str, version: str | None, message: str) -> None:
        if self.metrics is not None:
            self.metrics.model_error(stage)
        if version is not None:
            self._failures = self._failures + 1 if version == self._failed_version else 1
            self._failed_version = version
            delay = self.poll_seconds * min(2 ** (self._failures - 1), MAX_RETRY_FACTOR)
            self._retry_at = time.monotonic() + delay
            message += f"; retrying in {delay:g} s"
        serving = self.current.version if self.current else None
        self.last_error = message
        logger.error("%s; %s", message, f"still serving version {serving}" if serving else "no model is served")

    async def run(self) -> None:
        """Check now, then every `poll_seconds`, until cancelled."""
        while True:
            await asyncio.to_thread(self.check_once)
            await asyncio.sleep(self.poll_seconds)
