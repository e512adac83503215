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

With `follow_release`, the watcher also follows the release the pipeline recorded (the
`challenger` alias and its `release_*` tags, see serving/release.py): the candidate is loaded
the same way, off the request path, and held in `watcher.release` (None when there is no
active release against the champion being served). A candidate that fails to load is simply
not released here; the champion serves every request.
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
    from mlops_assets.core.release import Release
    from mlops_assets.serving.release import ServedRelease

logger = logging.getLogger("mlops_assets.serving")

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
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

    def release(self) -> Release | None:
        """The active release the pipeline recorded: the `challenger` alias's version, when its
        tags say it is under release; None otherwise."""
        from mlops_assets.core.release import Release

        found = self.registry.version_by_alias(self.model_name, CHALLENGER_ALIAS)
        if found is None:
            return None
        release = Release.from_tags(str(found.version), found.tags)
        return release if release is not None and release.active else None

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
                 onnx_threads: int | None = None, follow_release: bool = False):
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
        self.follow_release = follow_release and hasattr(source, "release")
        self.release: ServedRelease | None = None
        self._release_failed: tuple[str, int, float] | None = None    # (version, failures, retry at)

    def check_once(self) -> bool:
        """Look up the alias and load a new champion if it moved; True when a swap happened.
        With `follow_release`, then the release. Blocking (registry calls, file reads, ONNX
        session): run it off the event loop."""
        swapped = self._check_champion()
        if self.follow_release:
            self._check_release()
        return swapped

    def _check_champion(self) -> bool:
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
            released = self.release
            if released is not None and released.version == version:
                model = released.candidate        # the candidate promoted: already loaded and checked
            else:
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

    def _check_release(self) -> None:
        from mlops_assets.core.release import canary_seed
        from mlops_assets.serving.release import ServedRelease

        current, served = self.current, self.release
        try:
            found = self.source.release()
        except Exception as exc:  # noqa: BLE001  keep whatever is released now
            if self.metrics is not None:
                self.metrics.model_error("release_lookup")
            logger.error("release lookup failed: %s; keeping %s", exc,
                         f"the release of version {served.version}" if served else "no release")
            return
        if found is None or current is None or found.champion != current.version or found.version == current.version:
            if served is not None:
                logger.info("the release of %s version %s is over here; serving version %s alone",
                            self.spec.name, served.version, current.version if current else "none")
                self.release = None
                if self.metrics is not None:
                    self.metrics.release_changed(None)
            return
        if served is not None and served.version == found.version:
            if (served.mode, served.fraction, served.champion) != (found.mode, found.canary_fraction, found.champion):
                self.release = ServedRelease(served.candidate, found.champion, found.mode, found.canary_fraction,
                                             served.seed)
                if self.metrics is not None:
                    self.metrics.release_changed(self.release)
            return
        failed = self._release_failed
        if failed is not None and failed[0] == found.version and time.monotonic() < failed[2]:
            return
        try:
            candidate = self._prepare(found.version, self.source.load(found.version))
        except Exception as exc:  # noqa: BLE001  the champion serves alone
            failures = failed[1] + 1 if failed is not None and failed[0] == found.version else 1
            delay = self.poll_seconds * min(2 ** (failures - 1), MAX_RETRY_FACTOR)
            self._release_failed = (found.version, failures, time.monotonic() + delay)
            if self.metrics is not None:
                self.metrics.model_error("release_load")
            logger.error("candidate version %s could not be loaded for its %s release: %s; retrying in %g s",
                         found.version, found.mode, exc, delay)
            return
        self._release_failed = None
        self.release = ServedRelease(candidate, found.champion, found.mode, found.canary_fraction,
                                     canary_seed(self.spec.split.seed))
        if self.metrics is not None:
            self.metrics.release_changed(self.release)
        how = f"canary {found.canary_fraction:.0%}" if found.mode == "canary" else found.mode
        logger.info("releasing %s version %s beside champion %s (%s)", self.spec.name, found.version,
                    found.champion, how)

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
