"""Redis Streams implementation of `Broker` (consumer groups, pending entry lists, Lua commit).

Why Redis Streams here (docs/serving.md, "Streaming", has the measurements): a server-side
Lua script acknowledges a batch and appends its results in one atomic step, so the output
stream gets each result exactly once without a dedup window; each consumer's pending entry
list (PEL) is explicit, so a restarted consumer re-reads exactly its unacknowledged batch;
XINFO GROUPS reports the group's lag (Redis >= 7.0).

Events are stream entries whose field `data` holds the JSON payload.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mlops_assets.serving.broker import BrokerError, ConsumerInfo, GroupInfo, Message, OutputRecord

logger = logging.getLogger("mlops_assets.stream")

PAYLOAD_FIELD = b"data"
MAX_BLOCK_MS = 30_000
_PUBLISH_CHUNK = 5_000

# Acknowledge first; publish a record only for ids this very call acknowledged. Scripts run
# atomically on the server, and to the end even if the client dies meanwhile, so results
# and acks can never be half-applied, and a batch committed twice (a slow consumer and the
# one that claimed its batch) publishes each result once.
_COMMIT_SCRIPT = """
local group = ARGV[1]
local n_ids = tonumber(ARGV[2])
local acked = {}
local count = 0
for i = 3, 2 + n_ids do
  if redis.call('XACK', KEYS[1], group, ARGV[i]) == 1 then
    acked[ARGV[i]] = true
    count = count + 1
  end
end
local i = 3 + n_ids
while i <= #ARGV do
  local mid, kind, nf = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if acked[mid] then
    local args = {}
    for j = 1, 2 * nf do args[j] = ARGV[i + 2 + j] end
    redis.call('XADD', kind == 'o' and KEYS[2] or KEYS[3], '*', unpack(args))
  end
  i = i + 3 + 2 * nf
end
return count
"""


class RedisStreamsBroker:
    """`Broker` over one Redis connection pool."""

    def __init__(self, client, *, description: str = "redis"):
        self._redis = client
        self._where = description
        self._commit = client.register_script(_COMMIT_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> RedisStreamsBroker:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No client-side retries: a retried XREADGROUP could deliver a batch into the PEL whose
        # reply is never seen. Errors must surface, so the consumer re-reads its pending set.
        # The socket timeout stays above the longest BLOCK the consumer asks for (30 s).
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=MAX_BLOCK_MS / 1000 * 2,
                                      retry=Retry(NoBackoff(), 0), health_check_interval=30)
        where = client.connection_pool.connection_kwargs
        broker = cls(client, description=f"redis at {where.get('host', where.get('path'))}:{where.get('port', '')}")
        with broker._errors("connect"):
            client.ping()
        return broker

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerError(f"{self._where}: {what} failed: {exc}") from exc
        except redis.ResponseError as exc:
            raise BrokerError(f"{self._where}: {what} refused: {exc}") from exc

    # -- consuming -------------------------------------------------------------------------
    def ensure_group(self, stream: str, group: str) -> None:
        import redis

        with self._errors(f"create group '{group}' on '{stream}'"):
            try:
                self._redis.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_new(self, stream: str, group: str, consumer: str, count: int, max_wait_ms: int) -> list[Message]:
        if not 0 <= max_wait_ms <= MAX_BLOCK_MS:
            raise ValueError(f"max_wait_ms: must be within 0..{MAX_BLOCK_MS}, got {max_wait_ms}")
        with self._errors(f"read '{stream}'"):
            reply = self._redis.xreadgroup(
                group, consumer, {stream: ">"}, count=count,
                block=max_wait_ms or None,   # 0: return at once (Redis reads BLOCK 0 as "forever")
            )
        return _messages(reply)

    def read_own_pending(self, stream: str, group: str, consumer: str) -> list[Message]:
        # Id 0 instead of '>' returns the consumer's own PEL; no COUNT: all of it, one batch.
        with self._errors(f"read pending of '{consumer}' on '{stream}'"):
            reply = self._redis.xreadgroup(group, consumer, {stream: "0"})
        return _messages(reply, redelivered=True)

    def claim_dead(self, stream: str, group: str, consumer: str, min_idle_ms: int) -> list[Message]:
        # Not XAUTOCLAIM: it pages through the whole group's PEL by COUNT, so one claim could
        # mix two dead consumers' batches or split one; claiming one consumer's entire PEL
        # keeps the original batch together (see broker.py's invariant).
        with self._errors(f"claim on '{stream}'"):
            candidates = [
                c for c in self._consumers(stream, group)
                if c.name != consumer and c.pending > 0 and c.idle_seconds * 1000 >= min_idle_ms
            ]
            for dead in sorted(candidates, key=lambda c: -c.idle_seconds):
                entries = self._redis.xpending_range(
                    stream, group, min="-", max="+", count=dead.pending,
                    consumername=dead.name, idle=min_idle_ms,
                )
                ids = [e["message_id"] for e in entries]
                if not ids:
                    continue
                claimed = {_text(mid): fields for mid, fields in
                           self._redis.xclaim(stream, group, consumer, min_idle_ms, ids)}
                if not claimed:      # another consumer claimed them first
                    continue
                # Ids missing from the reply were deleted from the stream since delivery;
                # they stay in the batch (payload None) so it keeps its original first/last id.
                messages = [_message(mid, claimed.get(mid), True) for mid in (_text(i) for i in ids)]
                if messages:
                    logger.warning("claimed %d pending messages of consumer '%s' (idle %.0f s)",
                                   len(messages), dead.name, dead.idle_seconds)
                    return messages
        return []

    def commit(
        self,
        stream: str,
        group: str,
        message_ids: list[str],
        *,
        output_stream: str,
        outputs: list[OutputRecord],
        dead_letter_stream: str,
        dead_letters: list[OutputRecord],
    ) -> int:
        if not message_ids:
            return 0
        args: list[str] = [group, str(len(message_ids)), *message_ids]
        for kind, records in (("o", outputs), ("d", dead_letters)):
            for record in records:
                args += [record.message_id, kind, str(len(record.fields))]
                for key, value in record.fields.items():
                    args += [key, value]
        with self._errors(f"commit to '{output_stream}'"):
            return int(self._commit(keys=[stream, output_stream, dead_letter_stream], args=args))

    # -- producing and inspecting ----------------------------------------------------------
    def publish(self, stream: str, payloads: list[bytes]) -> list[str]:
        ids: list[str] = []
        with self._errors(f"publish to '{stream}'"):
            for start in range(0, len(payloads), _PUBLISH_CHUNK):
                pipe = self._redis.pipeline(transaction=False)
                for payload in payloads[start:start + _PUBLISH_CHUNK]:
                    pipe.xadd(stream, {PAYLOAD_FIELD: payload})
                ids += [_text(i) for i in pipe.execute()]
        return ids

    def read_range(self, stream: str, after: str | None = None, count: int = 10_000) -> list[tuple[str, dict[str, str]]]:
        with self._errors(f"read range of '{stream}'"):
            entries = self._redis.xrange(stream, min=f"({after}" if after else "-", max="+", count=count)
        return [(_text(mid), {_text(k): _text(v) for k, v in fields.items()}) for mid, fields in entries]

    def group_info(self, stream: str, group: str) -> GroupInfo:
        import redis

        with self._errors(f"inspect group '{group}' on '{stream}'"):
            try:
                groups = self._redis.xinfo_groups(stream)
            except redis.ResponseError:  # no such key: nothing was ever published
                return GroupInfo(stream, group, 0, None, 0, None, [], exists=False)
            length = int(self._redis.xlen(stream))
            found = next((g for g in groups if _text(g["name"]) == group), None)
            if found is None:
                return GroupInfo(stream, group, length, length, 0, None, [], exists=False)
            pending = int(found["pending"])
            oldest = None
            if pending:
                sample = self._redis.xpending_range(stream, group, min="-", max="+", count=min(pending, 1_000))
                oldest = max(e["time_since_delivered"] for e in sample) / 1000 if sample else None
            lag = found.get("lag")
            return GroupInfo(
                stream=stream, group=group, stream_length=length,
                lag=None if lag is None else int(lag), pending=pending,
                oldest_pending_idle_seconds=oldest, consumers=self._consumers(stream, group),
            )

    def _consumers(self, stream: str, group: str) -> list[ConsumerInfo]:
        out = []
        for c in self._redis.xinfo_consumers(stream, group):
            # Redis 7.2+ adds 'inactive' (since the last successful read/ack); 7.0 has 'idle'.
            idle_ms = c.get("inactive", c["idle"])
            idle_ms = c["idle"] if idle_ms is None or int(idle_ms) < 0 else idle_ms
            out.append(ConsumerInfo(_text(c["name"]), int(c["pending"]), int(idle_ms) / 1000))
        return out

    def close(self) -> None:
        self._redis.close()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(mid, fields, redelivered: bool) -> Message:
    mid = _text(mid)
    published_ms = int(mid.split("-", 1)[0])   # a Redis entry id is '<epoch ms>-<sequence>'
    if not fields:   # a pending entry whose stream entry was deleted or trimmed
        return Message(mid, None, published_ms, redelivered)
    return Message(mid, fields.get(PAYLOAD_FIELD, b""), published_ms, redelivered)


def _messages(reply, redelivered: bool = False) -> list[Message]:
    if not reply:
        return []
    _stream, entries = reply[0]
    return [_message(mid, fields, redelivered) for mid, fields in entries]
