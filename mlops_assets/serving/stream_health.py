"""Is the streaming consumer keeping up? A verdict a sensor can alert on.

Pure apart from one `Broker.group_info` call; no Dagster here (a sensor wraps it).

- **stalled**: a batch has been delivered and not acknowledged for longer than
  `max_pending_seconds` (its consumer died or hangs; a live consumer in the group claims it
  after its claim delay), or events wait and no consumer has read for `max_idle_seconds`.
- **lagging**: more than `max_lag` events have not been delivered yet.
- **ok**: otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Literal

from mlops_assets.serving.broker import Broker, ConsumerInfo

Verdict = Literal["ok", "lagging", "stalled"]


@dataclass(frozen=True)
class ConsumerHealth:
    stream: str
    group: str
    verdict: Verdict
    message: str
    lag: int | None                         # published, not yet delivered to the group
    pending: int                            # delivered, not acknowledged
    oldest_pending_seconds: float | None    # longest a delivered batch has waited for its ack
    last_activity_seconds: float | None     # since the most recent read/ack by any consumer
    consumers: list[ConsumerInfo] = field(default_factory=list)
    checked_at: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


def consumer_health(
    broker: Broker,
    stream: str,
    group: str,
    *,
    max_lag: int = 10_000,
    max_pending_seconds: float = 120.0,
    max_idle_seconds: float = 120.0,
) -> ConsumerHealth:
    """Lag, pending and activity of one consumer group, with a verdict and a readable message."""
    for name, value in (("max_lag", max_lag), ("max_pending_seconds", max_pending_seconds),
                        ("max_idle_seconds", max_idle_seconds)):
        if value is None or value < 0:
            raise ValueError(f"{name}: must be >= 0, got {value!r}")
    info = broker.group_info(stream, group)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    last_activity = min((c.idle_seconds for c in info.consumers), default=None)
    base = {"stream": stream, "group": group, "lag": info.lag, "pending": info.pending,
            "oldest_pending_seconds": info.oldest_pending_idle_seconds,
            "last_activity_seconds": last_activity, "consumers": info.consumers, "checked_at": now}
    where = f"group '{group}' on '{stream}'"

    if not info.exists:
        if info.stream_length:
            return ConsumerHealth(verdict="stalled", message=(
                f"stalled: {where} does not exist: no consumer has started; "
                f"{info.stream_length:,} events wait"), **base)
        return ConsumerHealth(verdict="ok", message=f"ok: nothing published to '{stream}' yet", **base)

    oldest = info.oldest_pending_idle_seconds
    if info.pending and oldest is not None and oldest > max_pending_seconds:
        holders = ", ".join(f"{c.name} ({c.pending} pending, idle {c.idle_seconds:.0f} s)"
                            for c in info.consumers if c.pending) or "unknown"
        return ConsumerHealth(verdict="stalled", message=(
            f"stalled: {info.pending:,} events in {where} delivered but not acknowledged for "
            f"{oldest:.0f} s (limit {max_pending_seconds:g} s), held by {holders}; "
            f"{_lag_text(info.lag)} not yet delivered"), **base)
    waiting = (info.lag or 0) > 0
    if waiting and (last_activity is None or last_activity > max_idle_seconds):
        idle = "no consumer" if last_activity is None else f"no consumer read for {last_activity:.0f} s"
        return ConsumerHealth(verdict="stalled", message=(
            f"stalled: {_lag_text(info.lag)} events wait in {where} and {idle} "
            f"(limit {max_idle_seconds:g} s)"), **base)
    if info.lag is not None and info.lag > max_lag:
        return ConsumerHealth(verdict="lagging", message=(
            f"lagging: {info.lag:,} events in {where} not yet delivered (limit {max_lag:,}); "
            f"{len(info.consumers)} consumer(s), last activity {last_activity or 0:.0f} s ago"), **base)
    lag_unknown = "; lag unknown (entries were deleted from the stream)" if info.lag is None else ""
    return ConsumerHealth(verdict="ok", message=(
        f"ok: {where}: {_lag_text(info.lag)} waiting, {info.pending:,} in flight, "
        f"{len(info.consumers)} consumer(s){lag_unknown}"), **base)


def _lag_text(lag: int | None) -> str:
    return "an unknown number of" if lag is None else f"{lag:,}"
