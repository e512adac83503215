"""A local cache of downloaded model bundles, verified on every read.

Keyed by what is unique to the artifact: the MLflow run that logged it and the hash of its
recorded file manifest. A recreated MLflow store whose version 1 is another model has
another run id, so it can never be served from the old entry; a tampered entry fails
verification and is fetched again. The folder is private (0700): bundles are code-adjacent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlops_assets.core.bundle import BundleIntegrityError, verify

COMPLETE_MARKER = ".complete"


def manifest_digest(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


class BundleCache:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def entry(self, model_name: str, run_id: str, manifest: dict[str, str]) -> Path:
        return self.root / model_name / f"{run_id}-{manifest_digest(manifest)[:16]}"

    def get(self, model_name: str, run_id: str, manifest: dict[str, str],
            download: Callable[[Path], Path], what: str) -> Path:
        """The verified local bundle directory; `download(tmp_dir) -> bundle dir inside it`
        fetches it from the registry when the cache has no good copy."""
        entry = self.entry(model_name, run_id, manifest)
        bundle = entry / "bundle"
        if (entry / COMPLETE_MARKER).exists():
            try:
                verify(bundle, manifest, what=f"cached {what}")
                return bundle
            except BundleIntegrityError:
                shutil.rmtree(entry, ignore_errors=True)   # tampered or torn: fetch it again
        private_dir(self.root)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=private_dir(self.root / model_name)))
        try:
            fetched = download(staging)
            verify(fetched, manifest, what=what)          # the registry's copy itself
            if entry.exists() and not (entry / COMPLETE_MARKER).exists():
                shutil.rmtree(entry, ignore_errors=True)   # a torn earlier attempt
            private_dir(entry)
            try:
                os.replace(fetched, bundle)
            except OSError:
                # Another process filled the entry meanwhile: use theirs once it verifies.
                if not (entry / COMPLETE_MARKER).exists():
                    raise
                verify(bundle, manifest, what=f"cached {what}")
                return bundle
            (entry / COMPLETE_MARKER).touch()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return bundle
