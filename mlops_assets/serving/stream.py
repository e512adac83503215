"""Streaming inference: micro-batches from a broker, scored by the champion, exactly once out.

How "exactly once in the output" holds despite SIGKILL (docs/serving.md, "Streaming"):

1. Delivery is at least once: a batch stays pending in the consumer group until committed.
2. A batch is written to Parquet first, under a name made of its first and last message ids
   (`<output_dir>/date=<day of the first message>/<first>_<last>.parquet`, temp file + rename),
   so writing the same batch again overwrites the same file.
3. Then one atomic broker commit acknowledges the batch and appends its results to the
   output stream (and bad events to the dead-letter stream), only for messages this commit
   acknowledged.
4. A restarted consumer first re-reads exactly its own pending batch, and a live consumer
   claims a dead one's whole pending batch, as its own batch: the same messages as the
   original, hence the same file name. New messages never join a redelivered batch.

The output key is the broker's message id (`event_id`), not the event's own id: a producer
that publishes the same event twice gets two scores.

The model comes from `model_source.RegistryModelSource`, shared with the real-time server:
the one place that calls the registry.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.serving.broker import Broker, BrokerError, Message, OutputRecord
from mlops_assets.serving.model_source import ModelSource, RegistryModelSource
from mlops_assets.serving.stream_output import (
    EVENT_ID_COLUMN,
    batch_key,
    output_records,
    write_batch,
)
from mlops_assets.spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_assets.core.bundle import ModelBundle

logger = logging.getLogger("mlops_assets.stream")


@dataclass(frozen=True)
class StreamNames:
    """Stream and group names; defaults are derived from the pipeline name."""

    events: str
    group: str
    output: str
    dead_letter: str

    @classmethod
    def for_spec(cls, spec: PipelineSpec, *, stream: str | None = None, group: str | None = None,
                 output_stream: str | None = None, dead_letter_stream: str | None = None) -> StreamNames:
        return cls(stream or f"{spec.name}:events", group or f"{spec.name}:scorers",
                   output_stream or f"{spec.name}:scores", dead_letter_stream or f"{spec.name}:dead-letter")


@dataclass
class ConsumerStats:
    batches: int = 0
    scored: int = 0
    dead_lettered: int = 0
    redelivered_batches: int = 0      # own pending batch re-read after a restart, or claimed
    duplicate_commits: int = 0        # messages already committed by another consumer
    model_switches: int = 0
    broker_errors: int = 0            # failed broker calls (each retried)
    model_version: str | None = None
    last_batch_at: float | None = None


class StreamConsumer:
    """Reads micro-batches for one consumer of a group, scores them, commits exactly once.

    `consumer_name` must be unique in the group and stable across restarts of the same
    consumer (a restart re-reads the pending batch of that name); a consumer that never
    comes back has its batch claimed by another after `claim_idle_seconds`.
    `on_batch_written(batch_key)` is called after the Parquet write, before the commit
    (progress reporting; fault drills kill the process there).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        model_source: ModelSource,
        broker: Broker,
        *,
        output_dir: str | os.PathLike,
        batch_size: int = 1_000,
        max_wait_ms: int = 1_000,
        champion_check_seconds: float = 30.0,
        names: StreamNames | None = None,
        consumer_name: str | None = None,
        claim_idle_seconds: float = 60.0,
        broker_retry_seconds: float = 60.0,
        on_batch_written: Callable[[str], None] | None = None,
    ):
        from mlops_assets.serving.stream_events import EventParser

        _require(batch_size, "batch_size", int, 1)
        # >= 1: a non-blocking read would spin on an idle stream (and Redis reads BLOCK 0 as "forever").
        _require(max_wait_ms, "max_wait_ms", int, 1)
        if max_wait_ms > 30_000:
            raise ValueError(f"max_wait_ms: must be at most 30000 (the broker's socket timeout is twice that), "
                             f"got {max_wait_ms}")
        for name, value in (("champion_check_seconds", champion_check_seconds),
                            ("claim_idle_seconds", claim_idle_seconds),
                            ("broker_retry_seconds", broker_retry_seconds)):
            _require(value, name, (int, float), 0, exclusive=True)
        self.spec, self.model_source, self.broker = spec, model_source, broker
        self.output_dir = Path(output_dir)
        self.batch_size, self.max_wait_ms = batch_size, max_wait_ms
        self.champion_check_seconds = float(champion_check_seconds)
        self.names = names or StreamNames.for_spec(spec)
        self.consumer_name = consumer_name or socket.gethostname()
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.broker_retry_seconds = float(broker_retry_seconds)
        self.on_batch_written = on_batch_written
        self.stats = ConsumerStats()
        self._parser = EventParser(spec)
        self._bundle: ModelBundle | None = None
        self._last_champion_check = float("-inf")
        self._alias_gone_logged = False
        self._last_claim_check = float("-inf")
        self._resync = False   # a broker call failed: a read may have delivered a batch we never saw

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> ConsumerStats:
        """Consume until `stop` is set; the batch in hand is finished and committed first."""
        names, me = self.names, self.consumer_name
        self._with_retry(stop, lambda: self.broker.ensure_group(names.events, names.group))
        if not self._wait_for_model(stop):
            return self.stats
        # Own pending batch first, as its own batch: it must not mix with new messages.
        pending = self._with_retry(stop, lambda: self.broker.read_own_pending(names.events, names.group, me))
        if pending:
            logger.warning("consumer '%s' resumes its unacknowledged batch of %d messages", me, len(pending))
            self._process(pending)
        while not stop.is_set():
            self._check_champion()
            if self._resync:
                # A failed read may still have delivered its batch into our pending set: take
                # exactly that set next, on its own, before any new message.
                self._resync = False
                pending = self._with_retry(stop, lambda: self.broker.read_own_pending(names.events, names.group, me))
                if pending:
                    logger.warning("consumer '%s' re-reads %d messages delivered during a broker error",
                                   me, len(pending))
                    self._process(pending)
                continue
            batch = self._claim_if_due(stop) or self._with_retry(
                stop, lambda: self.broker.read_new(names.events, names.group, me, self.batch_size, self.max_wait_ms))
            if batch:
                self._process(batch)
        logger.info("consumer '%s' stopped: %s", me, self.stats)
        return self.stats

    def _claim_if_due(self, stop: threading.Event) -> list[Message]:
        now = time.monotonic()
        if now - self._last_claim_check < min(self.claim_idle_ms / 1000 / 2, 30.0):
            return []
        self._last_claim_check = now
        names = self.names
        return self._with_retry(stop, lambda: self.broker.claim_dead(
            names.events, names.group, self.consumer_name, self.claim_idle_ms)) or []

    def _with_retry(self, stop: threading.Event, call):
        """Run a broker call; retry while the broker is away, give up after no success for a while."""
        failing_since = None
        while True:
            try:
                return call()
            except BrokerError as exc:
                self._resync = True
                self.stats.broker_errors += 1
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.broker_retry_seconds:
                    raise
                logger.warning("%s; retrying", exc)
                if stop.wait(min(2.0, self.broker_retry_seconds / 4)):
                    # Stopping while the broker is away: the pending batch is redelivered later.
                    return None

    # -- one micro-batch ---------------------------------------------------------------------
    def _process(self, messages: list[Message]) -> None:
        import polars as pl

        rows, row_ids, dead = [], [], []
        failed_at = _now().isoformat()
        for message in messages:
            row, errors = self._parser.parse(message.payload)
            if errors:
                from mlops_assets.serving.stream_events import reason

                dead.append(OutputRecord(message.id, {
                    EVENT_ID_COLUMN: message.id, "reason": reason(errors), "consumer": self.consumer_name,
                    "failed_at": failed_at, "payload": (message.payload or b"")[:65_536].decode("utf-8", "replace"),
                }))
            else:
                rows.append(row)
                row_ids.append(message.id)
        key = batch_key(messages)
        outputs: list[OutputRecord] = []
        if rows:
            bundle, version = self._bundle, self.stats.model_version
            features = self._parser.frame(rows)
            scored = features.hstack(bundle.score_frame(features)).with_columns(
                pl.lit(version, dtype=pl.String).alias("model_version"),
                pl.lit(_now(), dtype=pl.Datetime("us", "UTC")).alias("scored_at"),
                pl.Series(EVENT_ID_COLUMN, row_ids, dtype=pl.String),
            )
            relative = write_batch(scored, self.output_dir, messages[0].published_ms, key, self.consumer_name)
            outputs = output_records(scored, self.spec.id_column, relative)
        if self.on_batch_written is not None:
            self.on_batch_written(key)
        names = self.names
        never = threading.Event()   # a batch in hand is always committed, even while stopping
        acked = self._with_retry(never, lambda: self.broker.commit(
            names.events, names.group, [m.id for m in messages], output_stream=names.output,
            outputs=outputs, dead_letter_stream=names.dead_letter, dead_letters=dead))
        stats = self.stats
        stats.batches += 1
        stats.scored += len(rows)
        stats.dead_lettered += len(dead)
        stats.redelivered_batches += int(messages[0].redelivered)
        stats.duplicate_commits += len(messages) - acked
        stats.last_batch_at = time.time()
        if dead:
            logger.warning("batch %s: %d events to '%s', first: %s", key, len(dead), names.dead_letter,
                           dead[0].fields["reason"])

    # -- following the champion --------------------------------------------------------------
    def _wait_for_model(self, stop: threading.Event) -> bool:
        announced = False
        while not stop.is_set():
            self._check_champion(force=True)
            if self._bundle is not None:
                return True
            if not announced:
                logger.warning("no '%s' model to score with yet; events wait in '%s'",
                               getattr(self.model_source, "alias", "champion"), self.names.events)
                announced = True
            stop.wait(self.champion_check_seconds)
        return False

    def _check_champion(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_champion_check < self.champion_check_seconds:
            return
        self._last_champion_check = now
        current = self.stats.model_version
        try:
            version = self.model_source.champion_version()
        except Exception as exc:  # noqa: BLE001  a registry outage must not stop scoring with the model in hand
            logger.warning("champion lookup failed (%s); still scoring with version %s", exc, current)
            return
        if version is None:
            if current is not None and not self._alias_gone_logged:
                logger.warning("the champion alias is gone; still scoring with version %s", current)
            self._alias_gone_logged = current is not None
            return
        self._alias_gone_logged = False
        if version == current:
            return
        try:
            bundle = self.model_source.load(version)
            self._check_bundle(bundle, version)
        except Exception as exc:  # noqa: BLE001  a bad or unreadable version: keep the one that works
            logger.error("champion is now version %s but it could not be loaded (%s); keeping version %s",
                         version, exc, current)
            return
        if current is not None:
            logger.warning("champion changed: version %s -> %s; scoring with %s from the next batch",
                           current, version, version)
            self.stats.model_switches += 1
        else:
            logger.info("scoring with champion version %s", version)
        self._bundle, self.stats.model_version = bundle, version

    def _check_bundle(self, bundle: ModelBundle, version: str) -> None:
        if bundle.task != self.spec.task:
            raise ValueError(f"version {version} is a {bundle.task} model; the spec's task is {self.spec.task}")
        unknown = sorted(set(bundle.encoder.feature_names) - set(self.spec.feature_names))
        if unknown:
            raise ValueError(f"version {version} needs features {unknown} that the spec does not declare")
        _ = bundle.scorer  # builds the onnxruntime session now: a corrupt model fails here, not mid-batch


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _require(value, name: str, kind, minimum: float, exclusive: bool = False) -> None:
    bad_type = isinstance(value, bool) or not isinstance(value, kind)
    if bad_type or (value <= minimum if exclusive else value < minimum):
        rule = f"> {minimum}" if exclusive else f">= {minimum}"
        raise ValueError(f"{name}: must be a number {rule}, got {value!r}")


# -- the command ---------------------------------------------------------------------------
def run_stream(
    spec: PipelineSpec,
    *,
    registry,
    broker_url: str,
    stream: str | None = None,
    group: str | None = None,
    consumer_name: str,
    output_dir: str | os.PathLike,
    output_stream: str | None = None,
    dead_letter_stream: str | None = None,
    batch_size: int = 1_000,
    max_wait_ms: int = 1_000,
    champion_check_seconds: float = 30.0,
    claim_idle_seconds: float = 60.0,
    stop: threading.Event | None = None,
    on_batch_written: Callable[[str], None] | None = None,
) -> ConsumerStats:
    """`mlops-assets stream PIPELINE`: consume until SIGTERM/SIGINT (or `stop`), then return.

    On a signal the batch in hand is finished and committed; the caller exits 0.
    `registry` is the `MLflowRegistry` resource; the model is `spec.name`'s champion.
    """
    from mlops_assets.serving.broker import connect_broker

    stop = stop or threading.Event()
    consumer = StreamConsumer(
        spec, RegistryModelSource(registry, spec.name), connect_broker(broker_url),
        output_dir=output_dir, batch_size=batch_size, max_wait_ms=max_wait_ms,
        champion_check_seconds=champion_check_seconds, consumer_name=consumer_name,
        names=StreamNames.for_spec(spec, stream=stream, group=group, output_stream=output_stream,
                                   dead_letter_stream=dead_letter_stream),
        claim_idle_seconds=claim_idle_seconds, on_batch_written=on_batch_written,
    )
    previous = {}
    if threading.current_thread() is threading.main_thread():
        def _on_signal(signum, _frame):
            logger.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        return consumer.run(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        consumer.broker.close()
