"""One retrain (train -> evaluate) in its own process, for the interleaved-retrains test.

Its storage resource holds the evaluation until every worker has trained: train A, train B,
then evaluate A and B. A test double of the resource, not a production hook.
Usage: python -m mlops_assets_tests.stages.interleaved_worker SPEC_YAML BARRIER_DIR N_WORKERS NAME
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dagster as dg

from mlops_assets.definitions import build_mlops_defs, default_storage
from mlops_assets.pipeline import Pipeline, Stage
from mlops_assets.resources.storage import ArtifactStore
from mlops_assets.spec import PipelineSpec


class BarrierStore(ArtifactStore):
    barrier_dir: str
    workers: int
    name: str

    def read_parquet(self, rel: str):
        if rel.endswith("holdout.parquet"):
            barrier = Path(self.barrier_dir)
            (barrier / f"trained-{self.name}").touch()
            deadline = time.monotonic() + 600
            while len(list(barrier.glob("trained-*"))) < self.workers:
                if time.monotonic() > deadline:
                    raise TimeoutError("the other retrain never finished training")
                time.sleep(0.2)
        return super().read_parquet(rel)


def main(spec_path: str, barrier_dir: str, workers: str, name: str) -> int:
    spec = PipelineSpec.from_yaml(spec_path)
    store = BarrierStore(base_uri=default_storage(spec).base_uri, barrier_dir=barrier_dir,
                         workers=int(workers), name=name)
    defs = build_mlops_defs(spec, storage=store)
    pipeline = Pipeline(spec)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(list(defs.assets), selection=pipeline.keys([Stage.TRAINED_MODEL, Stage.EVALUATION_REPORT]),
                                instance=instance, resources=defs.resources, raise_on_error=False,
                                tags={"worker": name})
    print(f"RUN {name} {result.run_id} {'ok' if result.success else 'failed'}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
