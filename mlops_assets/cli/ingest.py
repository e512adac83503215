"""`mlops-assets ingest [PIPELINE] FILE`: land one file by hand, register its partition, run it now.

What the new-data sensor does for a file, done at once for this one: the file is copied into
the landing folder (atomically, under a temporary dot-name first) unless it is there already,
its name is checked as a partition key, the dynamic partition is added, and the run the sensor
would launch runs in this process on the pipeline's Dagster instance:
- a champion exists: the ingest job (validate, score with the champion, check drift);
- no champion and no other partition: the bootstrap job (all seven assets);
- no champion but other partitions: validation only; the retrain sensor then trains the first
  model on every validated partition (`mlops-assets run`).

Unlike `dg launch --assets <name>/raw_data --partition FILE` (which fails with
DagsterInvalidSubsetError until the partition exists), nothing has to have ticked first. The
run is tagged `mlops/requested_by=mlops-assets ingest` and shows in the UI as launched by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

REQUESTED_BY = "mlops-assets ingest"
DATA_SUFFIXES = (".parquet", ".pq", ".csv")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_landing_name(key: str) -> str:
    """A partition key the sensor would also take: a valid key naming a data file, not a temporary one."""
    from mlops_assets.sources.keys import check_partition_key

    check_partition_key(key)
    if key.startswith((".", "_", "~")) or not key.lower().endswith(DATA_SUFFIXES):
        from mlops_assets.sources.keys import PartitionKeyError

        raise PartitionKeyError(f"{key!r} must end in {', '.join(DATA_SUFFIXES)} and not start with '.', '_' "
                                "or '~' (the landing zone treats those as temporary): pass --as NAME")
    return key


def land(file: Path, landing: Path, key: str) -> tuple[Path, str]:
    """Put `file` into the landing folder as `key`; never replaces a different file of that name."""
    dest = landing / key
    if dest.resolve() == file.resolve():
        return dest, "already in the landing folder"
    if dest.exists():
        if _sha256(dest) == _sha256(file):
            return dest, "the same bytes are already in the landing folder"
        raise FileExistsError(f"{dest} exists with other content: the landing folder keeps it; land this file "
                              "under another name (--as NAME)")
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{key}.ingest-tmp"
    shutil.copyfile(file, tmp)
    os.replace(tmp, dest)
    return dest, f"copied to {dest}"


def choose_job(pipeline, jobs, *, has_champion: bool, others: int):
    from mlops_assets.automation.jobs import PREPARE_STAGES

    if has_champion:
        return jobs.ingest, None, "ingest (validate, score with the champion, check drift)"
    if others == 0:
        return jobs.bootstrap, None, "bootstrap (the whole lifecycle: the first champion)"
    return jobs.ingest, pipeline.keys(PREPARE_STAGES), (
        "validation only: no champion yet and other partitions exist; `mlops-assets run` lets the retrain "
        "sensor train the first model on every validated partition")


def cmd_ingest(args) -> int:
    from mlops_assets.cli.common import print_json, quiet_environment

    quiet_environment()
    if len(args.args) > 2:
        print("mlops-assets ingest: give [PIPELINE] FILE")
        return 2
    pipeline_arg, file_arg = (None, args.args[0]) if len(args.args) == 1 else args.args
    from mlops_assets.cli.target import dagster_home, load_target, open_instance

    target = load_target(pipeline_arg)
    source = target.spec.source
    if source.asset_key is not None:
        print(f"mlops-assets ingest: the pipeline's source is the upstream asset {'/'.join(source.asset_key)}: "
              "materialize it; the new-data sensor takes each materialization (`mlops-assets run`)")
        return 2
    if source.path.startswith("s3://"):
        print(f"mlops-assets ingest: the pipeline's source is {source.path}: copy the file there (e.g. `aws s3 cp`) "
              "and let the new-data sensor take it (`mlops-assets run`)")
        return 2
    file = Path(file_arg).expanduser().resolve()
    if not file.is_file():
        print(f"mlops-assets ingest: {file} is not a file")
        return 2
    from mlops_assets.sources.keys import PartitionKeyError

    key = args.key or file.name
    try:
        check_landing_name(key)
        dest, how = land(file, Path(source.path), key)
    except (PartitionKeyError, FileExistsError) as exc:
        print(f"mlops-assets ingest: {exc}")
        return 1

    from mlops_assets.automation.jobs import build_jobs
    from mlops_assets.pipeline import Pipeline
    from mlops_assets.signals import SOURCE_FILE_TAG, TRIGGER_TAG
    from mlops_assets.state import champion_of_record

    home = dagster_home(target, args.dagster_home)
    instance = open_instance(home)
    try:
        pipeline = Pipeline(target.spec)
        existing = instance.get_dynamic_partitions(pipeline.partitions_name)
        if key not in existing:
            instance.add_dynamic_partitions(pipeline.partitions_name, [key])
        job, selection, why = choose_job(pipeline, build_jobs(pipeline),
                                         has_champion=champion_of_record(instance, pipeline) is not None,
                                         others=len([p for p in existing if p != key]))
        if not args.json:
            print(f"{key}: {how}; partition {'existed' if key in existing else 'added'}; running {job.name}: {why}")
        defs = target.build_defs()
        result = defs.resolve_job_def(job.name).execute_in_process(
            instance=instance, partition_key=key, asset_selection=selection, raise_on_error=False,
            tags={TRIGGER_TAG: "manual", SOURCE_FILE_TAG: str(dest), "mlops/requested_by": REQUESTED_BY},
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        report = ingest_report(instance, pipeline, result, key, job.name)
    finally:
        instance.dispose()
    if args.json:
        print_json(report)
    else:
        for line in report["lines"]:
            print(line)
    return 0 if report["ok"] else 1


def ingest_report(instance, pipeline, result, key: str, job_name: str) -> dict:
    """What the run did, from its own events: per stage, the facts that matter."""
    import dagster as dg

    from mlops_assets.cli.deployment import first_line, run_failure_detail

    materialized = {}
    for record in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        m = record.dagster_event.event_specific_data.materialization
        materialized[m.asset_key.path[-1]] = {k: v.value for k, v in m.metadata.items()
                                              if isinstance(v.value, (str, int, float, bool)) or v.value is None}
    failure, gate = ("", False) if result.success else run_failure_detail(instance, result.run_id)
    lines = [f"run {result.run_id} ({job_name}): " + ("SUCCESS" if result.success else
                                                      "held by the gate" if gate else "FAILURE")]
    facts = {
        "raw_data": lambda m: f"{m.get('dagster/row_count')} rows",
        "validated_features": lambda m: f"{m.get('status')}" + (f" ({m.get('dagster/row_count')} rows)"
                                                                 if m.get("dagster/row_count") else ""),
        "trained_model": lambda m: f"v{m.get('model_version')}",
        "evaluation_report": lambda m: f"v{m.get('model_version')} gate_passed={m.get('gate_passed')} "
                                       f"approval={m.get('approval')}",
        "registered_model": lambda m: f"champion v{m.get('model_version')}",
        "batch_predictions": lambda m: f"{m.get('dagster/row_count')} rows scored by v{m.get('model_version')}",
        "drift_report": lambda m: f"drift share {m.get('drift_share')}, retrain signal {m.get('retrain_signal')}",
    }
    for stage, md in materialized.items():
        lines.append(f"  {stage}: {facts.get(stage, lambda m: 'materialized')(md)}")
    if not result.success:
        lines.append(f"  {first_line(failure, 300)}")
    return {"run_id": result.run_id, "job": job_name, "partition": key, "success": result.success,
            "gate_held": gate, "ok": result.success or gate, "failure": failure or None,
            "materialized": materialized, "lines": lines}
