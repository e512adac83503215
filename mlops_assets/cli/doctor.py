"""`mlops-assets doctor PIPELINE [--fix]`: what is wrong with a pipeline's state, and the safe repairs.

Each check reports findings with a severity (error, warning, info) and what `--fix` would do:

| check      | finds                                                        | --fix                              |
|------------|--------------------------------------------------------------|------------------------------------|
| promotion  | a half-done promotion or rollback (its intent is still on the | finish or undo it (the registry's  |
|            | model) whose run ended                                       | recovery), then record the result  |
| aliases    | `champion` alias and champion of record disagree; no alias   | record a promotion that completed  |
|            |                                                              | but was not recorded; restore a    |
|            |                                                              | missing alias; never undo a hand-  |
|            |                                                              | moved alias                        |
| versions   | versions never judged by the gate whose run ended            | mark them abandoned (registry      |
|            |                                                              | sweep; also fails their MLflow runs)|
| runs       | runs STARTED whose worker is gone; finished runs holding pool | fail them, free their slots, stop  |
|            | slots                                                        | orphans (the dead-run watchdog)    |
| bundles    | champion / rollback-target bundles that fail verification     | re-verify from a fresh download    |
| quarantine | quarantined files and their reasons                          | nothing: input is never deleted    |

Exit code: 0 when no error or warning remains, 1 otherwise. Reads the registry through the
registry resource only; acts only through the registry's own recovery, the watchdog's own
functions and Dagster's instance API.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SEVERITIES = ("error", "warning", "info")
PROMOTABLE = ("approved", "forced")


@dataclass
class Finding:
    check: str
    severity: str               # error | warning | info
    subject: str
    message: str
    fix: str | None = None      # what --fix does; None: nothing automatic
    fixed: str | None = None    # what --fix did

    def line(self) -> str:
        tail = f"  [fixed: {self.fixed}]" if self.fixed else (f"  [--fix: {self.fix}]" if self.fix else "")
        return f"{self.severity.upper():7} {self.check}/{self.subject}: {self.message}{tail}"


class Doctor:
    def __init__(self, target, instance, *, grace: float | None = None, location_name: str | None = None):
        from mlops_assets.pipeline import Pipeline

        self.target = target
        self.instance = instance
        self.pipeline = Pipeline(target.spec)
        self.model = self.pipeline.model_name
        self.registry = target.registry()
        self.grace = target.spec.automation.watchdog_grace_seconds if grace is None else grace
        self.location = location_name or target.name
        self.hostname = socket.gethostname()

    # -- helpers ----------------------------------------------------------------------
    def _run(self, run_id: str | None):
        return self.instance.get_run_by_id(run_id) if run_id else None

    def _alive(self, run_id: str | None) -> bool:
        run = self._run(run_id)
        return run is not None and not run.is_finished

    def _run_state(self, run_id: str | None) -> str:
        run = self._run(run_id)
        return "missing" if run is None else run.status.value

    def job_names(self) -> list[str]:
        from mlops_assets.cli.status import pipeline_job_names

        return pipeline_job_names(self.pipeline)

    # -- checks -----------------------------------------------------------------------
    def check(self) -> list[Finding]:
        findings: list[Finding] = []
        for part in (self.promotion, self.aliases, self.versions, self.runs, self.bundles, self.quarantine):
            try:
                findings += part()
            except Exception as exc:  # noqa: BLE001  (one check failing must not hide the others)
                findings.append(Finding(part.__name__, "error", "check", f"could not check: "
                                        f"{type(exc).__name__}: {str(exc)[:300]}"))
        return findings

    def promotion(self) -> list[Finding]:
        from mlops_assets.core.promotion import recovery_action
        from mlops_assets.resources.promotions import pending_intent

        intent = pending_intent(self.registry, self.model)
        if intent is None:
            return []
        what = f"{intent.kind} v{intent.from_version or '-'} -> v{intent.to_version} by run {intent.run_id[:8]}"
        if self._alive(intent.run_id):
            return [Finding("promotion", "info", f"v{intent.to_version}", f"{what} is in progress (its run is "
                            f"{self._run_state(intent.run_id)})")]
        approval = self.registry.get_version(self.model, intent.to_version).tags.get("approval")
        action = recovery_action(intent, approval)
        alias = self.registry.champion(self.model)
        return [Finding("promotion", "error", f"v{intent.to_version}",
                        f"half-done {what} (run {self._run_state(intent.run_id)}); the champion alias is at "
                        f"v{alias.version if alias else '-'}",
                        fix=f"{action} it (target approval: {approval}), then record the champion")]

    def aliases(self) -> list[Finding]:
        from mlops_assets.champion_record import explained_move
        from mlops_assets.resources.promotions import pending_intent
        from mlops_assets.state import champion_of_record

        record = champion_of_record(self.instance, self.pipeline)
        alias = self.registry.champion(self.model)
        out = []
        if alias is None and record is None:
            return [Finding("aliases", "info", "champion", "no champion yet")]
        intent = pending_intent(self.registry, self.model)
        if intent is not None and (alias.version if alias else None) != record:
            state = "in progress" if self._alive(intent.run_id) else "half done"
            out.append(Finding("aliases", "error" if state == "half done" else "info", "champion",
                               f"the alias is at v{alias.version if alias else '-'} but the pipeline records "
                               f"v{record or '-'}: a {intent.kind} to v{intent.to_version} is {state}",
                               fix="finish or undo the promotion first, then record the champion"
                               if state == "half done" else None))
        elif alias is not None and alias.version != record:
            how = explained_move(alias.tags, record, self._alive)
            if how is not None:
                out.append(Finding("aliases", "error", "champion",
                                   f"the alias is at v{alias.version} but the pipeline records v{record or '-'}: "
                                   f"a {how} completed in MLflow and its run ended before recording it",
                                   fix=f"record the {how} of v{alias.version} (a registered_model event)"))
            else:
                out.append(Finding("aliases", "error", "champion",
                                   f"the alias is at v{alias.version} but the pipeline records v{record or '-'}, and "
                                   "no promotion explains it (moved by hand?). Servers follow the alias, the "
                                   "pipeline the record: move the alias back, or run the rollback job to the "
                                   "version you want"))
        elif alias is None and record is not None:
            info = self.registry.get_version(self.model, record)
            ok = info.tags.get("approval") in PROMOTABLE
            out.append(Finding("aliases", "error", "champion",
                               f"the pipeline records v{record} but there is no champion alias: servers have "
                               "nothing to load",
                               fix=f"set the alias to v{record}" if ok else None))
        challenger = self.registry.version_by_alias(self.model, "challenger")
        if challenger is not None and challenger.tags.get("approval") in ("rejected", "abandoned"):
            out.append(Finding("aliases", "info", "challenger",
                               f"challenger labels v{challenger.version}, {challenger.tags.get('approval')}"))
        return out

    def versions(self) -> list[Finding]:
        out = []
        for info in self.registry.list_versions(self.model):
            approval = info.tags.get("approval")
            judged = info.tags.get("gate_passed") is not None or approval not in (None, "pending")
            owner = info.tags.get("dagster_run_id")
            if judged:
                continue
            if owner is not None and self._alive(owner):
                out.append(Finding("versions", "info", f"v{info.version}",
                                   f"not judged yet: its run {owner[:8]} is {self._run_state(owner)}"))
                continue
            out.append(Finding("versions", "warning", f"v{info.version}",
                               f"never judged by the gate; its run {owner[:8] if owner else '(none recorded)'} "
                               f"is {self._run_state(owner)}: an orphan version",
                               fix="mark it approval=abandoned (and fail its MLflow run if still open)"))
        return out

    def _run_facts(self):
        from mlops_assets.automation.watchdog import gather_run_facts

        facts = gather_run_facts(self.instance, job_names=self.job_names(), location=self.location,
                                 hostname=self.hostname)
        # A one-off check cannot watch a worker disappear: it counts a gone worker as gone since
        # the run's last event (the dead-run rule still needs that silence to exceed the grace).
        return [replace(f, worker_gone_since=f.last_event_at or (f.worker.recorded_at if f.worker else None))
                for f in facts]

    def runs(self) -> list[Finding]:
        from mlops_assets.automation.watchdog import find_dead_runs, process_alive

        facts = self._run_facts()
        out = []
        dead = find_dead_runs(facts, now=time.time(), grace_seconds=self.grace, is_alive=process_alive,
                              hostname=self.hostname)
        for d in dead:
            out.append(Finding("runs", "error", d.run_id[:8], f"{d.job_name} {d.status}: {d.reason}",
                               fix=("mark it " + d.mark + ", " if d.mark else "") + "free its pool slots"
                               + (f", stop orphaned pids {list(d.stop_pids)}" if d.stop_pids else "")))
        judged = {d.run_id for d in dead}
        for f in facts:
            if f.run_id in judged:
                continue
            if f.worker_host is None and f.status in ("STARTING", "STARTED", "CANCELING"):
                out.append(Finding("runs", "warning", f.run_id[:8],
                                   f"{f.job_name} {f.status} since {_ago(f.launched_at)}: launched outside a code "
                                   "server of this host (a script, `ingest`, another machine), so its process "
                                   "cannot be checked from here"))
            elif f.worker_host is None and f.holds_slots:
                out.append(Finding("runs", "warning", f.run_id[:8],
                                   f"{f.job_name} {f.status} still holds pool slots; its worker's host is unknown"))
        import dagster as dg

        queued = sum(1 for r in self.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
                     if r.job_name in self.job_names())
        if queued:
            out.append(Finding("runs", "info", "queue", f"{queued} run(s) queued: a daemon launches them "
                               "(`mlops-assets run`, `make dev`, or your deployment's)"))
        return out

    def bundles(self) -> list[Finding]:
        from mlops_assets.core.bundle import BundleIntegrityError
        from mlops_assets.state import champion_of_record

        record = champion_of_record(self.instance, self.pipeline)
        out = []
        with tempfile.TemporaryDirectory(prefix="mlops-doctor-") as tmp:
            fresh = self.registry.model_copy(update={"cache_dir": tmp})   # verify a fresh download, not a cache
            for info in self.registry.list_versions(self.model):
                approval = info.tags.get("approval")
                is_champion = info.version == record or "champion" in info.aliases
                if not is_champion and approval not in PROMOTABLE:
                    continue                       # never served, never a rollback target
                role = "the champion" if is_champion else "a rollback target"
                try:
                    fresh.bundle_dir(self.model, info.version)
                except BundleIntegrityError as exc:
                    out.append(Finding("bundles", "error" if is_champion else "warning", f"v{info.version}",
                                       f"{role}'s bundle fails verification: {str(exc)[:300]}"
                                       + (": roll back or retrain" if is_champion else ""),
                                       fix="verify again from a fresh download"))
        return out

    def quarantine(self) -> list[Finding]:
        from mlops_assets.sources.files import QUARANTINE_DIR

        out = []
        source = self.target.spec.source
        if source.path and not source.path.startswith("s3://"):
            folder = Path(source.path) / QUARANTINE_DIR
            for path in sorted(folder.glob("*")) if folder.is_dir() else []:
                if path.name.endswith(".reason.txt"):
                    continue
                reason_file = path.with_name(path.name + ".reason.txt")
                reason = reason_file.read_text().strip() if reason_file.exists() else "(no reason recorded)"
                out.append(Finding("quarantine", "warning", path.name,
                                   f"quarantined in {folder}: {reason[:300]}. Fix the file and land it again "
                                   "under a new name (`mlops-assets ingest --as`), then delete it here"))
        storage = self.target.storage()
        prefix = self.pipeline.layout.quarantine_record("x").rsplit("/", 1)[0]
        listed = {f.subject for f in out}
        for rel in storage.list(prefix):
            try:
                record = storage.read_json(rel)
            except (OSError, ValueError):
                continue
            moved = Path(str(record.get("moved_to") or "")).name
            if moved in listed:
                continue
            out.append(Finding("quarantine", "warning", str(record.get("partition")),
                               f"raw_data quarantined {record.get('source')}: {str(record.get('reason'))[:300]}"))
        return out

    # -- repairs ----------------------------------------------------------------------
    def fix(self) -> list[str]:
        """The safe repairs, in order; returns what each did."""
        done: list[str] = []
        before = self.registry.champion(self.model)
        swept = self.registry.sweep(self.model, self._alive)
        if swept["promotion"]:
            done.append(f"promotion: {swept['promotion'][0]}")
        if swept["abandoned"]:
            done.append(f"versions marked abandoned: {', '.join('v' + v for v in swept['abandoned'])}")
        if swept["orphaned_runs"]:
            done.append(f"MLflow runs left RUNNING by dead Dagster runs marked FAILED: {len(swept['orphaned_runs'])}")
        done += self._record_champion(before)
        done += self._free_dead_runs()
        return done

    def _record_champion(self, before) -> list[str]:
        from mlops_assets.champion_record import record_finished_move
        from mlops_assets.state import champion_of_record

        record = champion_of_record(self.instance, self.pipeline)
        alias = self.registry.champion(self.model)
        if alias is None and record is not None:
            if self.registry.get_version(self.model, record).tags.get("approval") in PROMOTABLE:
                self.registry.set_alias(self.model, "champion", record)
                return [f"champion alias restored to v{record}"]
            return []
        recorded = record_finished_move(self.instance, self.pipeline, self.registry, self._alive,
                                        recorded_by="mlops-assets doctor --fix")
        if recorded is None:
            return []
        return [(f"recorded champion v{alias.version} (was v{record or '-'}; alias was "
                 f"v{before.version if before else '-'} before the sweep)")]

    def _free_dead_runs(self) -> list[str]:
        from mlops_assets.automation.watchdog import handle_dead_runs

        previous = {f.run_id: f.worker_gone_since for f in self._run_facts() if f.worker_gone_since is not None}
        report = handle_dead_runs(self.instance, job_names=self.job_names(), location=self.location,
                                  grace_seconds=self.grace, previous=previous, hostname=self.hostname)
        done = [f"dead run {d.summary()}" for d in report.acted]
        for f in self._run_facts():    # finished elsewhere or by hand, slots still claimed
            if f.worker_host is None and f.holds_slots and f.status in ("SUCCESS", "FAILURE", "CANCELED") \
                    and f.ended_at is not None and time.time() - f.ended_at > self.grace:
                storage = self.instance.event_log_storage
                storage.free_concurrency_slots_for_run(f.run_id)
                done.append(f"freed the pool slots of finished run {f.run_id[:8]}")
        return done


def _ago(ts: float | None) -> str:
    if ts is None:
        return "?"
    return f"{time.time() - ts:.0f}s ago"


def cmd_doctor(args) -> int:
    from mlops_assets.cli.common import print_json, quiet_environment
    from mlops_assets.cli.target import dagster_home, load_target, open_instance

    quiet_environment()
    target = load_target(args.pipeline)
    instance = open_instance(dagster_home(target, args.dagster_home))
    try:
        doctor = Doctor(target, instance, grace=args.grace, location_name=args.location_name)
        findings = doctor.check()
        repairs: list[str] = []
        if args.fix and any(f.fix for f in findings):
            repairs = doctor.fix()
            after = doctor.check()
            remaining = {(f.check, f.subject) for f in after}
            for f in findings:
                if f.fix and (f.check, f.subject) not in remaining:
                    f.fixed = "repaired"
            findings = [f for f in findings if f.fixed] + after
    finally:
        instance.dispose()
    problems = [f for f in findings if f.severity in ("error", "warning") and not f.fixed]
    if args.json:
        print_json({"pipeline": target.name, "findings": [asdict(f) for f in findings], "repairs": repairs,
                    "problems": len(problems)})
    else:
        print(f"mlops-assets doctor: pipeline {target.name} ({target.path})")
        for f in sorted(findings, key=lambda f: (f.fixed is None, SEVERITIES.index(f.severity))):
            print("  " + f.line())
        for r in repairs:
            print(f"  did: {r}")
        if not findings:
            print("  no findings: aliases, promotions, versions, runs, bundles and quarantine look right")
        fixable = sum(1 for f in problems if f.fix)
        print(f"{len(problems)} problem(s) remain" + (f"; {fixable} can be repaired with --fix" if fixable
                                                      and not args.fix else ""))
    return 1 if problems else 0


__all__ = ["Doctor", "Finding", "cmd_doctor"]
