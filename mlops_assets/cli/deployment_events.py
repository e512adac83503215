"""What a deployment's automation reports, as plain records: ticks, run outcomes, the one line
each is said in, and the error a deployment fails with. `Automation` (automation_client.py)
produces them; `mlops-assets ingest` and `status` describe runs with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


class DeploymentError(RuntimeError):
    """The code server or the daemon failed; the message carries the tail of its log."""


@dataclass
class RunOutcome:
    run_id: str
    job_name: str
    status: str
    partition: str | None
    seconds: float | None
    detail: str = ""             # the failure, or what the gate said
    gate_held: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" or self.gate_held


@dataclass
class TickEvent:
    name: str
    kind: str                    # sensor | schedule
    status: str                  # SUCCESS | SKIPPED | FAILURE
    timestamp: float
    run_ids: list[str]
    text: str                    # skip reason or error


def first_line(text: str | None, width: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def files_waiting(tick: TickEvent) -> bool:
    """The new-data sensor skipped because files are still being written (they will be taken)."""
    text = tick.text.lower()
    return "waiting" in text and ("settle" in text or "complete" in text or "hashed" in text)


def run_failure_detail(instance, run_id: str, gate_step: str = "evaluation_report") -> tuple[str, bool]:
    """The first error of a failed run, and whether only the gate (a blocking check) held it."""
    import dagster as dg

    records = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE})
    failed_steps, messages = [], []
    for record in records:
        event = record.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if event and event.event_type == dg.DagsterEventType.STEP_FAILURE:
            failed_steps.append(record.step_key or "")
        text = error.message if error is not None else record.message
        text = (text or "").replace("dagster._core.definitions.events.Failure: ", "")   # the stage's own words
        if text:
            messages.append(f"{record.step_key + ': ' if record.step_key else ''}{text.strip()}")
    gate = bool(failed_steps) and all(gate_step in s for s in failed_steps)
    return (messages[0] if messages else "no error recorded"), gate
