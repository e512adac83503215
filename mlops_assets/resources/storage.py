"""Artifact storage: datasets, predictions, reports and profiles at versioned URIs.

One resource, two backends: a local directory (embedded default) and S3 or any
S3-compatible store (production). Every write is atomic: a local write goes to a
temporary name and is renamed; an S3 PUT is atomic by itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
# A Parquet footer's key-value metadata, or polars' callable that returns it once the data is encoded.
ParquetFooter = dict[str, str] | Callable[[Any], dict[str, str]]


class StorageError(RuntimeError):
    """An artifact that cannot be written or read; the message names its URI."""


class ArtifactStore(dg.ConfigurableResource):
    """Where the pipeline keeps its files. `base_uri` is a local path or `s3://bucket/prefix`."""

    base_uri: str = Field(description="Local directory or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000. Unset: AWS."
    )
    s3_region: str | None = None
    connect_timeout_s: float = Field(5.0, description="Fail fast on an unreachable endpoint.")

    # -- addressing ------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.base_uri.startswith("s3://")

    def uri(self, rel: str) -> str:
        """The absolute location of `rel`; a path that would leave the store is refused."""
        rel = rel.lstrip("/")
        if any(part in ("..", "") for part in rel.split("/")) and rel:
            raise StorageError(f"artifact path {rel!r} is refused: no empty or '..' components")
        if self.is_s3:
            return f"{self.base_uri.rstrip('/')}/{rel}"
        return str(Path(self.base_uri).resolve() / rel)

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        rest = self.base_uri[len("s3://"):].rstrip("/")
        bucket, _, prefix = rest.partition("/")
        key = f"{prefix}/{rel.lstrip('/')}" if prefix else rel.lstrip("/")
        return bucket, key

    def _s3(self):
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=self.connect_timeout_s, read_timeout=60,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        return boto3.client("s3", endpoint_url=self.s3_endpoint_url, region_name=self.s3_region, config=config)

    # -- bytes -------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> str:
        if self.is_s3:
            bucket, key = self._bucket_key(rel)
            self._call_s3(lambda c: c.put_object(Bucket=bucket, Key=key, Body=data), rel)
            return self.uri(rel)
        final = Path(self.uri(rel))
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # mkstemp creates 0600; artifacts are meant to be read by the team (umask decides).
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return str(final)

    def read_bytes(self, rel: str) -> bytes:
        if self.is_s3:
            bucket, key = self._bucket_key(rel)
            return self._call_s3(lambda c: c.get_object(Bucket=bucket, Key=key)["Body"].read(), rel)
        try:
            return Path(self.uri(rel)).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"no artifact at {self.uri(rel)}") from exc

    def exists(self, rel: str) -> bool:
        if self.is_s3:
            bucket, key = self._bucket_key(rel)
            from botocore.exceptions import ClientError

            def head(client) -> bool:
                try:
                    client.head_object(Bucket=bucket, Key=key)
                    return True
                except ClientError as exc:
                    # Only "no such object" means absent; a denied or missing bucket is an error.
                    if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                        return False
                    raise

            return self._call_s3(head, rel)
        return Path(self.uri(rel)).exists()

    def list(self, prefix: str) -> list[str]:
        """Relative paths of files under `prefix`, sorted."""
        prefix = prefix.strip("/")
        if self.is_s3:
            bucket, key_prefix = self._bucket_key(prefix + "/")
            base_len = len(self._bucket_key("")[1])

            def list_keys(client) -> list[str]:
                out: list[str] = []
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
                    out.extend(obj["Key"][base_len:].lstrip("/") for obj in page.get("Contents", []))
                return out

            return sorted(self._call_s3(list_keys, prefix))
        root = Path(self.uri(prefix))
        if not root.exists():
            return []
        base = Path(self.uri(""))
        return sorted(
            str(p.relative_to(base)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def _call_s3(self, fn, rel: str):
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            return fn(self._s3())
        except EndpointConnectionError as exc:
            raise StorageError(f"S3 endpoint {self.s3_endpoint_url or 'AWS'} unreachable: {exc}") from exc
        except ClientError as exc:
            raise StorageError(f"S3 error for {self.uri(rel)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 error for {self.uri(rel)} at {self.s3_endpoint_url}: {exc}") from exc

    # -- typed helpers ---------------------------------------------------------------------
    def write_parquet(self, rel: str, df: pl.DataFrame, metadata: ParquetFooter | None = None) -> str:
        """`metadata`: key-value pairs for the file's footer (e.g. the frame's content hash), or
        a callable returning them, which polars calls after encoding the data."""
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True, metadata=metadata or None)
        return self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str) -> pl.DataFrame:
        if not self.is_s3:
            path = self.uri(rel)
            if not os.path.exists(path):
                raise StorageError(f"no artifact at {path}")
            return pl.read_parquet(path)
        return pl.read_parquet(io.BytesIO(self.read_bytes(rel)))

    def write_json(self, rel: str, payload: Any) -> str:
        return self.write_bytes(rel, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_file(self, rel: str, local_path: str | os.PathLike[str]) -> str:
        return self.write_bytes(rel, Path(local_path).read_bytes())

    # -- files too big for memory ------------------------------------------------------------
    @contextlib.contextmanager
    def reading_path(self, rel: str) -> Iterator[Path]:
        """A local path to read `rel` from: the file itself, or an S3 object streamed to a
        temporary file (boto3's transfer manager: bounded memory), removed afterwards."""
        if not self.is_s3:
            path = Path(self.uri(rel))
            if not path.exists():
                raise StorageError(f"no artifact at {path}")
            yield path
            return
        bucket, key = self._bucket_key(rel)
        with tempfile.TemporaryDirectory(prefix="mlops-read-") as tmp:
            local = Path(tmp) / Path(rel).name
            self._call_s3(lambda c: c.download_file(bucket, key, str(local)), rel)
            yield local

    @contextlib.contextmanager
    def writing_path(self, rel: str) -> Iterator[Path]:
        """A local path to write `rel` to; on success it becomes the artifact (a rename locally,
        a streamed upload to S3). The caller's own write must be atomic at that path."""
        if not self.is_s3:
            final = Path(self.uri(rel))
            final.parent.mkdir(parents=True, exist_ok=True)
            yield final
            return
        bucket, key = self._bucket_key(rel)
        with tempfile.TemporaryDirectory(prefix="mlops-write-") as tmp:
            local = Path(tmp) / Path(rel).name
            yield local
            self._call_s3(lambda c: c.upload_file(str(local), bucket, key), rel)
