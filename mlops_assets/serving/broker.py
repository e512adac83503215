"""The broker behind the streaming consumer: a small interface, so another broker can plug in.

The consumer needs six things from a broker; each maps onto Redis Streams (implemented in
`redis_streams.py`) and onto Kafka (not implemented yet):

| need                          | Redis Streams                          | Kafka                                   |
|-------------------------------|----------------------------------------|-----------------------------------------|
| read a micro-batch for a group | XREADGROUP ... > with COUNT and BLOCK  | consumer group `poll(max_records, timeout)` |
| re-read my unacked batch       | XREADGROUP ... 0 (the consumer's PEL)  | resume from the last committed offset    |
| take over a dead consumer      | XPENDING + XCLAIM of its whole PEL     | group rebalance reassigns the partition  |
| commit: results + dead letters + ack, atomically | one Lua script (XACK, then XADD only for ids it acked) | transactional producer + `send_offsets_to_transaction` |
| lag / pending info             | XINFO GROUPS / XPENDING / XINFO CONSUMERS | committed vs end offsets per partition |
| publish (producers, tests)     | XADD                                   | `produce`                                |

Invariant the consumer relies on, and every implementation must keep: a consumer's pending
set is exactly one batch it read (it commits a whole batch at once and reads the next only
after that), and `read_own_pending` / `claim_dead` return that whole set as one batch. So a
redelivered batch holds exactly the messages of the original one, and its output, named
after its first and last message ids, lands in the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class BrokerError(RuntimeError):
    """The broker is unreachable or refused a request; the message says which and where."""


@dataclass(frozen=True)
class Message:
    """One event as delivered: the broker's id (unique, ordered within a stream) and payload."""

    id: str
    payload: bytes | None          # None: the entry was deleted/trimmed after delivery
    published_ms: int              # broker timestamp (epoch ms): names the output's date partition
    redelivered: bool = False      # re-read after a restart, or claimed from a dead consumer


@dataclass(frozen=True)
class OutputRecord:
    """One entry to publish on commit, keyed by the message id it answers."""

    message_id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_seconds: float            # since the consumer last read or acknowledged


@dataclass(frozen=True)
class GroupInfo:
    """Where one consumer group stands on one stream."""

    stream: str
    group: str
    stream_length: int
    lag: int | None                # entries not yet delivered to the group (None: unknown)
    pending: int                   # delivered, not acknowledged
    oldest_pending_idle_seconds: float | None
    consumers: list[ConsumerInfo] = field(default_factory=list)
    exists: bool = True            # False: the group has not been created yet


@runtime_checkable
class Broker(Protocol):
    """What `StreamConsumer` needs from a broker (see the table above)."""

    def ensure_group(self, stream: str, group: str) -> None:
        """Create the stream and group if missing; a new group starts at the beginning."""

    def read_new(self, stream: str, group: str, consumer: str, count: int, max_wait_ms: int) -> list[Message]:
        """Up to `count` messages never delivered to the group, waiting at most `max_wait_ms` (0: none)."""

    def read_own_pending(self, stream: str, group: str, consumer: str) -> list[Message]:
        """Every message delivered to `consumer` and not acknowledged, as one batch."""

    def claim_dead(self, stream: str, group: str, consumer: str, min_idle_ms: int) -> list[Message]:
        """Take over the whole pending set of one other consumer idle for `min_idle_ms`.

        Returns [] when no consumer qualifies. Must only be called while `consumer` has
        nothing pending itself.
        """

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
        """Acknowledge `message_ids` and publish the records answering them, atomically.

        A record is published only if this call acknowledged its message: a message that
        another consumer already committed gets no second output. Returns how many ids
        this call acknowledged.
        """

    def publish(self, stream: str, payloads: list[bytes]) -> list[str]:
        """Append events; returns their ids (producers and tests)."""

    def read_range(self, stream: str, after: str | None = None, count: int = 10_000) -> list[tuple[str, dict[str, str]]]:
        """Entries of `stream` after id `after` (from the start when None), oldest first."""

    def group_info(self, stream: str, group: str) -> GroupInfo:
        """Lag, pending and consumers of a group."""

    def close(self) -> None:
        """Release connections."""


def connect_broker(url: str) -> Broker:
    """A broker client for a URL: `redis://host:port/db` (Redis Streams) today."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from mlops_assets.serving.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker.from_url(url)
    raise ValueError(
        f"broker_url: unsupported scheme '{scheme or url}'; expected redis://host:port/db "
        "(Redis Streams). Kafka can plug in by implementing mlops_assets.serving.broker.Broker."
    )
