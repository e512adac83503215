"""Reading one arrival (a local or S3 file) within the spec's limits, and quarantining what is refused.

Order of work for one file, so that nothing large is decoded before it is known to fit:
the file's size (stat / S3 ContentLength) -> the Parquet footer's row and column counts
(`pyarrow.parquet.read_metadata`, which reads the footer only) or, for a CSV, a count of its
line breaks -> the bytes, hashed -> decoding into a frame. A local file is opened once, without
following a symbolic link unless the spec allows it, and everything is read from that one open
file, so the bytes hashed, checked and decoded are the same whatever happens to the path.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mlops_assets.sources.csv_read import read_csv_bytes
from mlops_assets.sources.keys import check_arrival_key

QUARANTINE_DIR = "_quarantine"
HASH_CHUNK = 1 << 20
MAX_REASON_CHARS = 2_000          # a reason goes into events, records and alerts: keep it a few KB

# Run tags carrying a file's identity from the sensor to raw_data.
SIZE_TAG = "mlops/source_size"
MTIME_TAG = "mlops/source_mtime_ns"
SHA256_TAG = "mlops/source_sha256"
ETAG_TAG = "mlops/source_etag"


class ArrivalReadError(ValueError):
    """An arrival that cannot be read; the message names the file and the cause. Quarantined."""


class ArrivalRefused(ArrivalReadError):
    """An arrival the landing policy or the spec's limits refuse; the message names the rule."""


class ArrivalChanged(RuntimeError):
    """The file is not the one the sensor picked up, or changed while it was read. Not
    quarantined: the file is being written, and the sensor picks the new version up."""


class QuarantineError(RuntimeError):
    """A file that cannot be moved aside safely; it is left where it is."""


@dataclass(frozen=True)
class FileIdentity:
    """What makes two sightings of a file "the same file": its size, mtime and content hash
    (an S3 object seen by the sensor: size, LastModified and ETag, as it is not downloaded)."""

    size: int
    mtime_ns: int
    sha256: str = ""
    etag: str = ""

    def same_content(self, other: FileIdentity | None) -> bool:
        if other is None:
            return False
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        if self.etag and other.etag:
            return self.etag == other.etag
        return (self.size, self.mtime_ns) == (other.size, other.mtime_ns)

    def to_tags(self) -> dict[str, str]:
        tags = {SIZE_TAG: str(self.size), MTIME_TAG: str(self.mtime_ns)}
        if self.sha256:
            tags[SHA256_TAG] = self.sha256
        if self.etag:
            tags[ETAG_TAG] = self.etag
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str] | None) -> FileIdentity | None:
        tags = tags or {}
        if SIZE_TAG not in tags or MTIME_TAG not in tags:
            return None
        return cls(int(tags[SIZE_TAG]), int(tags[MTIME_TAG]), tags.get(SHA256_TAG, ""), tags.get(ETAG_TAG, ""))

    def to_metadata(self) -> dict[str, object]:
        found = {"source_size": self.size, "source_mtime_ns": str(self.mtime_ns), "source_sha256": self.sha256}
        return {**found, "source_etag": self.etag} if self.etag else found

    @classmethod
    def from_metadata(cls, metadata: dict) -> FileIdentity | None:
        def plain(key):
            value = metadata.get(key)
            return getattr(value, "value", value)

        if plain("source_size") is None or plain("source_mtime_ns") is None:
            return None
        return cls(int(plain("source_size")), int(plain("source_mtime_ns")), plain("source_sha256") or "",
                   plain("source_etag") or "")

    def describe(self) -> str:
        digest = f"sha256 {self.sha256[:12]}" if self.sha256 else f"etag {self.etag[:12]}"
        return f"{self.size} bytes, {digest}"


def cap_text(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit} more characters]"


def arrival_uri(source_path: str, partition_key: str) -> str:
    """The landing-zone location of a partition's file. The key is checked first, so a key
    such as `../../x` (or one naming a non-data file) never points at another file."""
    check_arrival_key(partition_key)
    if source_path.startswith("s3://"):
        return source_path.rstrip("/") + "/" + partition_key
    return os.path.join(source_path, partition_key)


# -- opening and identifying a local file --------------------------------------------------
def open_local_arrival(path: str, *, allow_symlinks: bool = False) -> int:
    """An fd for a regular file at `path`. A symbolic link is refused unless allowed (its
    target is never opened); a FIFO, device or socket is refused before it could block a read."""
    try:
        link = os.lstat(path)
    except FileNotFoundError as exc:
        raise ArrivalReadError(f"arrival file {path} does not exist") from exc
    if stat.S_ISLNK(link.st_mode) and not allow_symlinks:
        raise ArrivalRefused(f"arrival file {path} is a symbolic link (to {_link_target(path)}); links are "
                             "refused unless source.allow_symlinks is true")
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ArrivalRefused(f"arrival file {path} is a symbolic link to a missing file") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ArrivalRefused(f"arrival file {path} is not a regular file ({_kind(st.st_mode)})")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if allow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:   # swapped for a link or removed since the lstat
        raise ArrivalChanged(f"arrival file {path} changed while it was opened: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArrivalChanged(f"arrival file {path} was replaced by a non-regular file while it was opened")
    return fd


def hash_local_file(path: str, *, allow_symlinks: bool = False) -> FileIdentity:
    """Size, mtime and SHA-256 of a local file, streamed in 1 MiB chunks. Raises
    ArrivalChanged when the file changes while it is hashed."""
    fd = open_local_arrival(path, allow_symlinks=allow_symlinks)
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fh.fileno())
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
        _unchanged(path, before, os.fstat(fh.fileno()))
    return FileIdentity(before.st_size, before.st_mtime_ns, digest.hexdigest())


def _unchanged(where: str, before: os.stat_result, after: os.stat_result) -> None:
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise ArrivalChanged(f"arrival file {where} changed while it was read "
                             f"({before.st_size} -> {after.st_size} bytes)")


# -- limits ---------------------------------------------------------------------------------
def check_size(where: str, size: int, limits) -> None:
    if size == 0:
        raise ArrivalRefused(f"arrival file {where} is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise ArrivalRefused(f"arrival file {where} has {size} bytes, over limits.max_file_bytes "
                             f"({limits.max_file_bytes})")


def check_shape(where: str, rows: int, columns: int, limits, *, counted: str = "rows") -> None:
    problems = []
    if rows > limits.max_rows:
        problems.append(f"{rows} {counted}, over limits.max_rows ({limits.max_rows})")
    if columns > limits.max_columns:
        problems.append(f"{columns} columns, over limits.max_columns ({limits.max_columns})")
    if rows * columns > limits.max_cells:
        problems.append(f"{rows * columns} cells ({rows} x {columns}), over limits.max_cells ({limits.max_cells})")
    if problems:
        raise ArrivalRefused(f"arrival file {where} has " + "; ".join(problems))


def parquet_shape(source, where: str) -> tuple[int, int]:
    """Rows and (leaf) columns from the Parquet footer alone: no data page is read."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(source)
    except Exception as exc:  # pyarrow raises several types for a bad footer
        raise ArrivalReadError(f"arrival file {where} is unreadable as parquet: {cap_text(str(exc), 300)}") from exc
    return meta.num_rows, meta.num_columns


def csv_shape(data: bytes) -> tuple[int, int]:
    """Data rows (line breaks, so an upper bound when quoted fields hold line breaks) and
    the header's column count."""
    header = data[: data.find(b"\n")] if b"\n" in data else data
    columns = len(next(csv.reader([header.decode("utf-8", errors="replace").rstrip("\r")]), []))
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return max(lines - 1, 0), columns


# -- reading ----------------------------------------------------------------------------------
def _format_of(name: str, fmt: str) -> str:
    return fmt if fmt != "auto" else Path(name).suffix.lstrip(".").lower()


def _parse(payload, kind: str, where: str) -> pl.DataFrame:
    try:
        if kind in ("parquet", "pq"):
            return pl.read_parquet(payload)
        if kind == "csv":
            return read_csv_bytes(payload.getvalue() if isinstance(payload, io.BytesIO) else Path(payload).read_bytes())
    except FileNotFoundError as exc:
        raise ArrivalReadError(f"arrival file {where} does not exist") from exc
    except Exception as exc:  # polars raises many types for corrupt input
        raise ArrivalReadError(f"arrival file {where} is unreadable as {kind}: {cap_text(str(exc), 500)}") from exc
    raise ArrivalReadError(f"arrival file {where}: unsupported format '{kind}' (parquet or csv)")


def _checked_parse(data: bytes, kind: str, where: str, limits, *, footer_checked: bool = False) -> pl.DataFrame:
    """Limits first (the footer, or the CSV's line breaks), then decoding."""
    if limits is not None:
        if kind in ("parquet", "pq") and not footer_checked:
            check_shape(where, *parquet_shape(io.BytesIO(data), where), limits)
        elif kind == "csv":
            check_shape(where, *csv_shape(data), limits, counted="lines")
    return _parse(io.BytesIO(data), kind, where)


def read_arrival_file(path: str, fmt: str = "auto") -> pl.DataFrame:
    """Read one local file without landing-zone checks (label files)."""
    return _parse(path, _format_of(path, fmt), path)


@dataclass(frozen=True)
class LoadedArrival:
    """A decoded arrival with the exact bytes it was decoded from (hashed into `identity`)."""

    frame: pl.DataFrame
    identity: FileIdentity
    data: bytes
    kind: str

    @property
    def is_parquet(self) -> bool:
        return self.kind in ("parquet", "pq")


def read_local_arrival(path: str, fmt: str = "auto", *, limits=None, allow_symlinks: bool = False,
                       expected: FileIdentity | None = None) -> tuple[pl.DataFrame, FileIdentity]:
    """Read one landing file within `limits`; `expected` is the identity the sensor recorded."""
    loaded = load_local_arrival(path, fmt, limits=limits, allow_symlinks=allow_symlinks, expected=expected)
    return loaded.frame, loaded.identity


def load_local_arrival(path: str, fmt: str = "auto", *, limits=None, allow_symlinks: bool = False,
                       expected: FileIdentity | None = None) -> LoadedArrival:
    kind = _format_of(path, fmt)
    fd = open_local_arrival(path, allow_symlinks=allow_symlinks)
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fh.fileno())
        if expected is not None and (before.st_size, before.st_mtime_ns) != (expected.size, expected.mtime_ns):
            raise ArrivalChanged(f"arrival file {path} changed since the sensor picked it up "
                                 f"({expected.size} -> {before.st_size} bytes)")
        if limits is not None:
            check_size(path, before.st_size, limits)
        try:
            if limits is not None and kind in ("parquet", "pq"):
                check_shape(path, *parquet_shape(fh, path), limits)   # the footer only
                fh.seek(0)
            data = fh.read()
            _unchanged(path, before, os.fstat(fh.fileno()))
        except ArrivalReadError:
            _unchanged(path, before, os.fstat(fh.fileno()))   # being rewritten, not corrupt
            raise
    identity = FileIdentity(before.st_size, before.st_mtime_ns, hashlib.sha256(data).hexdigest())
    if expected is not None and expected.sha256 and expected.sha256 != identity.sha256:
        raise ArrivalChanged(f"arrival file {path} has other content than the sensor picked up "
                             f"(sha256 {expected.sha256[:12]} -> {identity.sha256[:12]})")
    return LoadedArrival(_checked_parse(data, kind, path, limits, footer_checked=True), identity, data, kind)


def read_s3_arrival(client, uri: str, fmt: str = "auto", *, limits=None,
                    expected: FileIdentity | None = None) -> tuple[pl.DataFrame, FileIdentity]:
    """Read one S3 object within `limits`. With the sensor's ETag, the GET is conditional
    (If-Match), so an object overwritten since the sensor saw it is never read as that one."""
    loaded = load_s3_arrival(client, uri, fmt, limits=limits, expected=expected)
    return loaded.frame, loaded.identity


def load_s3_arrival(client, uri: str, fmt: str = "auto", *, limits=None,
                    expected: FileIdentity | None = None) -> LoadedArrival:
    from botocore.exceptions import ClientError

    bucket, _, key = uri[len("s3://"):].partition("/")
    condition = {"IfMatch": f'"{expected.etag}"'} if expected is not None and expected.etag else {}
    try:
        response = client.get_object(Bucket=bucket, Key=key, **condition)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "412"):
            raise ArrivalChanged(f"arrival object {uri} was overwritten since the sensor picked it up") from exc
        if code in ("NoSuchKey", "404"):
            raise ArrivalReadError(f"arrival object {uri} does not exist") from exc
        raise
    body = response["Body"]
    size = int(response.get("ContentLength", 0))
    try:
        if limits is not None:
            check_size(uri, size, limits)            # before a byte of the body is read
        data = body.read()
    finally:
        body.close()
    modified = response.get("LastModified")
    identity = FileIdentity(len(data), int(modified.timestamp() * 1e9) if modified else 0,
                            hashlib.sha256(data).hexdigest(), str(response.get("ETag", "")).strip('"'))
    kind = _format_of(key, fmt)
    return LoadedArrival(_checked_parse(data, kind, uri, limits), identity, data, kind)


def read_arrival(uri: str, fmt: str = "auto", s3_client=None, *, limits=None, allow_symlinks: bool = False,
                 expected: FileIdentity | None = None) -> tuple[pl.DataFrame, FileIdentity]:
    loaded = load_arrival(uri, fmt, s3_client, limits=limits, allow_symlinks=allow_symlinks, expected=expected)
    return loaded.frame, loaded.identity


def load_arrival(uri: str, fmt: str = "auto", s3_client=None, *, limits=None, allow_symlinks: bool = False,
                 expected: FileIdentity | None = None) -> LoadedArrival:
    """`read_arrival`, keeping the bytes: raw_data stores a Parquet arrival as those bytes."""
    if uri.startswith("s3://"):
        return load_s3_arrival(s3_client, uri, fmt, limits=limits, expected=expected)
    return load_local_arrival(uri, fmt, limits=limits, allow_symlinks=allow_symlinks, expected=expected)


# -- quarantine -------------------------------------------------------------------------------
def quarantine_local_file(origin: str, reason: str) -> str | None:
    """Move a refused local file aside (never delete it) with a note saying why, and return
    where it went; None when there is nothing local to move. A symbolic link is moved as a
    link (its target is untouched); an earlier quarantined file of the same name is kept."""
    if origin.startswith("s3://") or not os.path.lexists(origin):
        return None
    qdir = os.path.join(os.path.dirname(origin), QUARANTINE_DIR)
    with contextlib.suppress(FileExistsError):
        os.mkdir(qdir)
    if not stat.S_ISDIR(os.lstat(qdir).st_mode):
        raise QuarantineError(f"{qdir} is not a directory (a symbolic link or a file), so {origin} is left "
                              "in place: quarantine moves files into a real folder of the landing zone only")
    moved_to = _free_name(qdir, os.path.basename(origin))
    os.rename(origin, moved_to)
    _write_new(moved_to + ".reason.txt", cap_text(reason) + "\n")
    return moved_to


def _free_name(directory: str, name: str) -> str:
    # Long names are shortened (with a hash, so they stay distinct) to leave room for suffixes.
    if len(name) > 200:
        name = name[:180] + "~" + hashlib.sha256(name.encode()).hexdigest()[:12]
    candidate, n = os.path.join(directory, name), 1
    while os.path.lexists(candidate) or os.path.lexists(candidate + ".reason.txt"):
        candidate, n = os.path.join(directory, f"{name}.{n}"), n + 1
    return candidate


def _write_new(path: str, text: str) -> None:
    """Write via a temporary file and a rename: a link planted at `path` is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=".reason.", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
