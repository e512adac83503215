"""`mlops-assets status PIPELINE [--json]`: what the pipeline's recorded state says, on one screen.

The champion (of record, and where the `champion` alias points), every model version with its
approval, aliases and data version, the last drift report of each partition, the retrain
decision as the retrain sensor would take it now (with its reasons), the signals it weighs,
the last tick of each sensor and schedule with its skip reason, and the runs in flight.
Read-only: nothing is written, except that an empty Dagster home gets its dagster.yaml.
"""

from __future__ import annotations

import datetime as dt
import time

IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _when(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else None


def pipeline_job_names(pipeline) -> list[str]:
    from mlops_assets.automation.jobs import build_jobs

    return [j.name for j in build_jobs(pipeline).all()] + [pipeline.job("rollback")]


def instigator_facts(instance, names: list[str]) -> list[dict]:
    """The last finished tick of each named sensor or schedule (any code location; the latest wins)."""
    found: dict[str, dict] = {}
    for state in instance.all_instigator_state():
        if state.instigator_name not in names:
            continue
        ticks = [t for t in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
                 if t.status.value != "STARTED"]
        last = ticks[0] if ticks else None
        fact = {
            "name": state.instigator_name, "kind": state.instigator_type.value.lower(),
            "status": state.status.value, "last_tick": _when(last.timestamp) if last else None,
            "last_tick_status": last.status.value if last else None,
            "skip_reason": (last.skip_reason or None) if last else None,
            "error": (last.error.message.strip().splitlines()[0] if last and last.error else None),
            "run_ids": list(last.run_ids) if last else [],
            "_ts": last.timestamp if last else 0.0,
        }
        if state.instigator_name not in found or fact["_ts"] >= found[state.instigator_name]["_ts"]:
            found[state.instigator_name] = fact
    out = []
    for name in names:
        fact = found.get(name) or {"name": name, "status": "never started", "last_tick": None, "skip_reason": None,
                                   "run_ids": [], "_ts": 0.0}
        fact.pop("_ts", None)
        out.append(fact)
    return out


def collect_status(target, instance) -> dict:
    import dagster as dg

    from mlops_assets.automation.jobs import build_jobs
    from mlops_assets.automation.retrain import decide_now
    from mlops_assets.pipeline import Pipeline, Stage
    from mlops_assets.state import (
        champion_of_record,
        latest_materialization,
        partition_facts,
        retrain_signals,
        value,
    )

    pipeline = Pipeline(target.spec)
    jobs = build_jobs(pipeline)
    registry = target.registry()
    record = champion_of_record(instance, pipeline)
    versions = registry.list_versions(pipeline.model_name)
    alias = next((v.version for v in versions if "champion" in v.aliases), None)

    partitions = []
    for facts in partition_facts(instance, pipeline):
        drift = latest_materialization(instance, pipeline.key(Stage.DRIFT_REPORT), facts.key)
        preds = latest_materialization(instance, pipeline.key(Stage.BATCH_PREDICTIONS), facts.key)
        partitions.append({
            "partition": facts.key, "validation": facts.status, "rows": facts.rows, "labelled": facts.labelled,
            "scored_by": value(preds, "model_version"),
            "drift": None if drift is None else {
                "against": value(drift, "champion_version"), "drift_share": value(drift, "drift_share"),
                "dataset_drift": value(drift, "dataset_drift"), "retrain_signal": value(drift, "retrain_signal"),
                "summary": str(value(drift, "signal_summary", value(drift, "summary", "")) or "")[:500],
            },
        })
    decision = decide_now(instance, pipeline, jobs)
    signals = [{"kind": s.kind, "key": s.key, "partition": s.partition, "against": s.champion_version,
                "current": s.champion_version == record, "summary": s.summary[:300]}
               for s in retrain_signals(instance, pipeline)]
    job_names = pipeline_job_names(pipeline)
    in_flight = []
    for record_ in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus(s) for s in IN_FLIGHT]),
                                            limit=100):
        run = record_.dagster_run
        if run.job_name in job_names:
            in_flight.append({"run_id": run.run_id, "job": run.job_name, "status": run.status.value,
                              "partition": run.tags.get("dagster/partition"),
                              "since": _when(record_.create_timestamp.timestamp())})
    recent = []
    for record_ in instance.get_run_records(dg.RunsFilter(job_name=None), limit=200):
        run = record_.dagster_run
        if run.job_name in job_names and len(recent) < 8:
            recent.append({"run_id": run.run_id, "job": run.job_name, "status": run.status.value,
                           "partition": run.tags.get("dagster/partition"),
                           "launched_by": run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name")
                           or run.tags.get("mlops/requested_by") or "manual",
                           "created": _when(record_.create_timestamp.timestamp())})
    defs = target.build_defs()
    automation = [s.name for s in defs.sensors or []] + [s.name for s in defs.schedules or []]
    return {
        "pipeline": pipeline.name, "spec": str(target.path), "dagster_home": str(instance.root_directory),
        "champion": {"of_record": record, "alias": alias, "agree": record == alias},
        "versions": [{"version": v.version, "aliases": v.aliases, "approval": v.tags.get("approval"),
                      "gate_passed": v.tags.get("gate_passed"), "data_version": v.tags.get("data_version"),
                      "dagster_run_id": v.tags.get("dagster_run_id"), "gate": v.tags.get("gate_message")}
                     for v in versions],
        "partitions": partitions,
        "retrain_decision": {"act": decision.act, "reason": decision.reason, "text": decision.describe()},
        "signals": signals,
        "automation": instigator_facts(instance, automation),
        "in_flight": in_flight,
        "recent_runs": recent,
        "at": _when(time.time()),
    }


def render(status: dict, width: int = 110) -> list[str]:
    from mlops_assets.cli.deployment import first_line

    c = status["champion"]
    lines = [f"pipeline {status['pipeline']}  ({status['spec']}; Dagster home {status['dagster_home']})"]
    if c["of_record"] is None and c["alias"] is None:
        lines.append("champion: none yet")
    else:
        agree = "" if c["agree"] else f"  !! the alias points at v{c['alias']}: run `mlops-assets doctor`"
        lines.append(f"champion: v{c['of_record']} (of record; alias @champion -> v{c['alias']}){agree}")
    lines.append(f"versions ({len(status['versions'])}):")
    for v in status["versions"][-8:]:
        alias = f" @{','.join(v['aliases'])}" if v["aliases"] else ""
        lines.append(f"  v{v['version']}{alias}: approval={v['approval']} data_version={v['data_version']} "
                     f"gate={first_line(v['gate'] or '-', 60)}")
    lines.append(f"partitions ({len(status['partitions'])}):")
    for p in status["partitions"][-10:]:
        d = p["drift"]
        drift = (f"drift vs v{d['against']}: share={d['drift_share']:.2f} signal={d['retrain_signal']}"
                 if d and isinstance(d.get("drift_share"), (int, float)) else "no drift report")
        lines.append(f"  {p['partition']}: {p['validation'] or 'not validated'}, {p['rows']} rows, "
                     f"scored by v{p['scored_by']}, {drift}" if p["scored_by"] else
                     f"  {p['partition']}: {p['validation'] or 'not validated'}, {p['rows']} rows, not scored, {drift}")
    lines.append("retrain decision now: " + first_line(status["retrain_decision"]["text"], width))
    pending = [s for s in status["signals"] if s["current"]]
    lines.append(f"signals: {len(status['signals'])} ({len(pending)} against the current champion)")
    for s in pending[:5]:
        lines.append(f"  {s['key']}: {first_line(s['summary'], width - 10)}")
    lines.append("automation (last tick):")
    for a in status["automation"]:
        said = a.get("error") or a.get("skip_reason") or (f"launched {len(a['run_ids'])} run(s)" if a["run_ids"] else "")
        when = a.get("last_tick") or "never ticked"
        lines.append(f"  {a['name']} [{a['status'].lower()}] {when}: {first_line(said, width - 40)}")
    lines.append(f"runs in flight: {len(status['in_flight'])}")
    for r in status["in_flight"]:
        lines.append(f"  {r['run_id'][:8]} {r['job']} {r['status']} {r['partition'] or ''} since {r['since']}")
    if status["recent_runs"]:
        lines.append("recent runs:")
        for r in status["recent_runs"][:5]:
            lines.append(f"  {r['run_id'][:8]} {r['job']} {r['status']} {r['partition'] or ''} "
                         f"({r['launched_by']}, {r['created']})")
    return lines


def cmd_status(args) -> int:
    from mlops_assets.cli.common import print_json, quiet_environment, terminal_width
    from mlops_assets.cli.target import dagster_home, load_target, open_instance

    quiet_environment()
    target = load_target(args.pipeline)
    instance = open_instance(dagster_home(target, args.dagster_home))
    try:
        status = collect_status(target, instance)
    finally:
        instance.dispose()
    if args.json:
        print_json(status)
    else:
        print("\n".join(render(status, terminal_width())))
    return 0
