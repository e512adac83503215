"""Fixtures for tests against real services: an S3-compatible HTTP server and PostgreSQL.

- `s3_server`: a moto S3 server on 127.0.0.1 for the whole test session, always stopped.
  Fake AWS credentials are set for the session only, with a random secret key so a test
  can prove that the secret never leaks into metadata or logs.
- `s3_bucket`: a fresh bucket per test, emptied and deleted afterwards.
- `postgres_server`: runs `scripts/start_postgres.sh` (needs root). If the script fails the
  tests FAIL with its output; they are never skipped.
- `postgres_databases`: creates fresh databases for one test module, dropped afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlops_assets.spec import PipelineSpec
from mlops_assets_tests.conftest import small_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
START_POSTGRES = REPO_ROOT / "scripts" / "start_postgres.sh"
PG_ROLE = "mlops"
PG_PASSWORD = "mlops"


# -- shared helpers ------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def services_spec(root: Path, source_path: str | None = None, **overrides) -> PipelineSpec:
    """`small_spec`, smaller still for a 2-core machine: 40 boosting rounds.

    These tests are about the services, not model quality, so the gate's quality floors are
    loosened (a few thousand rows and 40 rounds land near the demo's 0.70 ROC-AUC floor, and
    the fairness gap is noisy with small groups); the gate itself still runs.
    """
    data = small_spec(root).model_dump(mode="json")
    data["model"]["lightgbm"]["num_boost_round"] = 40
    data["model"]["lightgbm"]["learning_rate"] = 0.1
    data["gate"]["min_main_metric"] = 0.6
    data["gate"]["max_fairness_gap"] = None
    if source_path is not None:
        data["source"]["path"] = source_path
    data.update(overrides)
    return PipelineSpec.from_dict(data)


# -- S3 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    credentials: AwsCredentials

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.credentials.region)


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[AwsCredentials]:
    """Fake credentials for this test session only; nothing reads a real profile."""
    creds = AwsCredentials("testing", f"testing-secret-{secrets.token_hex(12)}")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_ROLE_ARN",
                    "AWS_WEB_IDENTITY_TOKEN_FILE"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", creds.access_key_id)
        mp.setenv("AWS_SECRET_ACCESS_KEY", creds.secret_access_key)
        mp.setenv("AWS_DEFAULT_REGION", creds.region)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield creds


@pytest.fixture(scope="session")
def s3_server(aws_credentials) -> Iterator[S3Server]:
    """moto's S3-compatible HTTP server on 127.0.0.1, on a free port, for the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}", aws_credentials)
    finally:
        server.stop()


def create_bucket(s3: S3Server, prefix: str = "mlops-test") -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=name)
    return name


def delete_bucket(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_server) -> Iterator[str]:
    """A fresh bucket for one test."""
    bucket = create_bucket(s3_server)
    try:
        yield bucket
    finally:
        delete_bucket(s3_server, bucket)


# -- PostgreSQL ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db, connect_timeout=5)
        conn.autocommit = True
        return conn

    def query(self, db: str, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """Start (idempotently) the local cluster and its `mlops` role with the project's script."""
    cmd = ["bash", str(START_POSTGRES)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "MLOPS_PG_ROLE": PG_ROLE, "MLOPS_PG_PASSWORD": PG_PASSWORD})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{START_POSTGRES} timed out after {exc.timeout}s\n{exc.stdout or ''}\n{exc.stderr or ''}",
                    pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{START_POSTGRES} failed with exit code {proc.returncode} (PostgreSQL is required, "
            f"these tests are not skipped)\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    found = re.search(r"ready: role \S+ on ([\d.]+):(\d+)", proc.stdout)
    if not found:
        pytest.fail(f"{START_POSTGRES} did not report readiness:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return PostgresServer(found.group(1), int(found.group(2)), PG_ROLE, PG_PASSWORD)


@dataclass
class PostgresDatabases:
    """Fresh databases (`mlops_test_<label>_<random>`) for one module, all dropped afterwards."""

    server: PostgresServer
    created: list[str] = field(default_factory=list)

    def create(self, label: str = "db") -> str:
        name = f"mlops_test_{label}_{secrets.token_hex(4)}"
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                for name in reversed(self.created):
                    # FORCE (PostgreSQL 13+) ends the connections still open (pools, daemons).
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()
        self.created.clear()


@pytest.fixture(scope="module")
def postgres_databases(postgres_server) -> Iterator[PostgresDatabases]:
    dbs = PostgresDatabases(postgres_server)
    try:
        yield dbs
    finally:
        dbs.drop_all()
