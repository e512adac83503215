"""Static checks of the deployment files under deploy/.

Nothing here needs a network, a Docker engine, a cluster or a database. What can be proven
offline is proven with the real validators:

* Dagster instance files: Dagster's own instance-config validation, then every class they name is
  imported and its config is processed against that class's config schema (env vars resolved).
* Helm values: the chart's values.schema.json (vendored, see deploy/README.md) with jsonschema,
  plus a stricter key-path walk for the places where the schema allows unknown keys.
* ECS: the task definition and RunTask arguments against botocore's bundled ECS API model.
* Compose and Dockerfile: structure and cross-file consistency (ports, hosts, credentials, pins).

What cannot be checked here: that the images build, that the services start and talk to each
other, and that Helm renders the chart (no helm binary, no engine).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import re
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
INSTANCE_FILES = {
    "compose": DEPLOY / "dagster.yaml",
    "ecs": DEPLOY / "ecs" / "dagster.yaml",
}
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
HELM_SCHEMA = DEPLOY / "helm" / "dagster-chart-values.schema.json"
GPU_TAGS = DEPLOY / "helm" / "gpu-training-tags.yaml"
ECS_TASK_DEF = DEPLOY / "ecs" / "user-code-task-definition.json"

# Provenance of the vendored chart schema (also stated in deploy/README.md).
CHART_SCHEMA_COMMIT = "437f92d953812a3efdf5a464ba196eb3fcd9a777"
CHART_SCHEMA_SHA256 = "b9e0afe0fb0cf090ec6298cbc5b09bfd0bbe1118a3aba1da0dc4792aaa1c667b"

TRAINING_POOL = "mlops_training"
CODE_SERVER_PORT = 4000


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, sep, version = dep.partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


# ------------------------------------------------------------------------------------------------
# Every file parses
# ------------------------------------------------------------------------------------------------

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
JSON_FILES = sorted(DEPLOY.rglob("*.json"))


def test_expected_deploy_files_exist():
    expected = [
        "Dockerfile",
        "docker-compose.yaml",
        "dagster.yaml",
        "workspace.yaml",
        "README.md",
        "helm/values.yaml",
        "helm/gpu-training-tags.yaml",
        "helm/dagster-chart-values.schema.json",
        "ecs/dagster.yaml",
        "ecs/workspace.yaml",
        "ecs/user-code-task-definition.json",
        "postgres/10-create-mlflow-db.sh",
    ]
    missing = [name for name in expected if not (DEPLOY / name).is_file()]
    assert not missing, f"missing under deploy/: {missing}"
    assert (REPO / "docs" / "deployment.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path: Path):
    data = _load_yaml(path)
    assert isinstance(data, dict) and data, f"{_rel(path)} is empty or not a mapping"


@pytest.mark.parametrize("path", JSON_FILES, ids=_rel)
def test_json_parses(path: Path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict) and data


# ------------------------------------------------------------------------------------------------
# Dagster instance config (deploy/dagster.yaml, deploy/ecs/dagster.yaml)
# ------------------------------------------------------------------------------------------------


def _env_refs(obj: Any) -> set[str]:
    """Names of the env vars referenced with Dagster's `{env: NAME}` form."""
    if isinstance(obj, Mapping):
        if set(obj) == {"env"} and isinstance(obj["env"], str):
            return {obj["env"]}
        return set().union(*(_env_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_env_refs(v) for v in obj)) if obj else set()
    return set()


def _dummy_env(names: set[str]) -> dict[str, str]:
    return {name: ("5432" if name.endswith("_PORT") else f"dummy-{name.lower()}") for name in names}


def _instance_dir(tmp_path: Path, source: Path | dict) -> Path:
    """A DAGSTER_HOME-like folder holding `source` (a file or a config dict) as dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        shutil.copy(source, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(yaml.safe_dump(source))
    return home


def _validate_instance(home: Path):
    from dagster._core.instance.config import dagster_instance_config

    return dagster_instance_config(str(home), config_filename="dagster.yaml")


def _class_config_errors(module_name: str, class_name: str, config: Mapping[str, Any]) -> list[str]:
    """Import the class the way Dagster does when it loads the instance and process its config."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._serdes import ConfigurableClass

    klass = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(klass, ConfigurableClass), f"{module_name}.{class_name}"
    result = process_config(resolve_to_config_type(klass.config_type()), dict(config))
    return [] if result.success else [e.message for e in result.errors]


def _dbapi_error(url: str) -> str | None:
    """Import the DB driver SQLAlchemy would use for `url`; None when it is installed."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except ImportError as exc:
        return f"{make_url(url).drivername}: {exc}"
    return None


def test_validated_against_the_pinned_dagster_versions():
    import dagster
    import dagster_aws
    import dagster_postgres

    pins = _pyproject_pins()
    assert dagster.__version__ == pins["dagster"]
    assert dagster_aws.__version__ == pins["dagster-aws"]
    assert dagster_postgres.__version__ == pins["dagster-postgres"]


@pytest.mark.parametrize("name", sorted(INSTANCE_FILES))
def test_instance_config_passes_dagster_validation(name: str, tmp_path: Path):
    # No env vars are set: `env:` references must be acceptable to the schema as they are.
    value, custom_instance_class = _validate_instance(_instance_dir(tmp_path, INSTANCE_FILES[name]))
    assert custom_instance_class is None
    assert "postgres" in value["storage"]
    assert value["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert value["compute_logs"]["class"] == "S3ComputeLogManager"
    assert value["run_retries"]["enabled"] is True
    assert value["telemetry"]["enabled"] is False
    runs = value["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] > 0
    assert runs["tag_concurrency_limits"], "expected run tag concurrency limits"
    pools = value["concurrency"]["pools"]
    assert pools["default_limit"] >= 1 and pools["granularity"] == "op"
    assert TRAINING_POOL in INSTANCE_FILES[name].read_text()


EXPECTED_CLASSES = {
    "compose": {
        "storage_data": ("dagster_postgres", "DagsterPostgresStorage"),
        "run_coordinator_data": ("dagster._core.run_coordinator", "QueuedRunCoordinator"),
        "compute_logs_data": ("dagster_aws.s3.compute_log_manager", "S3ComputeLogManager"),
    },
    "ecs": {
        "storage_data": ("dagster_postgres", "DagsterPostgresStorage"),
        "run_coordinator_data": ("dagster._core.run_coordinator", "QueuedRunCoordinator"),
        "compute_logs_data": ("dagster_aws.s3.compute_log_manager", "S3ComputeLogManager"),
        "run_launcher_data": ("dagster_aws.ecs", "EcsRunLauncher"),
    },
}


@pytest.mark.parametrize("name", sorted(INSTANCE_FILES))
def test_instance_classes_import_and_accept_their_config(name, tmp_path, monkeypatch):
    from dagster._core.instance.ref import InstanceRef

    path = INSTANCE_FILES[name]
    for var, val in _dummy_env(_env_refs(_load_yaml(path))).items():
        monkeypatch.setenv(var, val)
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path, path)))
    for field, (module_name, class_name) in EXPECTED_CLASSES[name].items():
        data = getattr(ref, field)
        assert (data.module_name, data.class_name) == (module_name, class_name), field
        errors = _class_config_errors(data.module_name, data.class_name, data.config_dict)
        assert not errors, f"{field}: {errors}"


@pytest.mark.parametrize("name", sorted(INSTANCE_FILES))
def test_instance_postgres_driver_is_installed(name, monkeypatch):
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; dagster-postgres ships psycopg2."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    config = _load_yaml(INSTANCE_FILES[name])
    for var, val in _dummy_env(_env_refs(config)).items():
        monkeypatch.setenv(var, val)
    schema = resolve_to_config_type(DagsterPostgresStorage.config_type())
    result = process_config(schema, config["storage"]["postgres"])
    assert result.success, result.errors
    assert _dbapi_error(pg_url_from_config(result.value)) is None


@pytest.mark.parametrize("name", sorted(INSTANCE_FILES))
def test_instance_env_vars_must_be_set(name, tmp_path, monkeypatch):
    """A missing env var is an error when the classes are loaded, not a silent default."""
    from dagster._core.instance.ref import InstanceRef

    path = INSTANCE_FILES[name]
    env = _dummy_env(_env_refs(_load_yaml(path)))
    for var, val in env.items():
        monkeypatch.setenv(var, val)
    monkeypatch.delenv("DAGSTER_COMPUTE_LOGS_BUCKET")
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path, path)))
    data = ref.compute_logs_data
    errors = _class_config_errors(data.module_name, data.class_name, data.config_dict)
    assert any("DAGSTER_COMPUTE_LOGS_BUCKET" in e for e in errors), errors


def _break(config: dict, how: str) -> dict:
    c = copy.deepcopy(config)
    if how == "unknown top-level key":
        c["run_retires"] = {"enabled": True}
    elif how == "wrong type":
        c["run_retries"]["max_retries"] = "twice"
    elif how == "out-of-range pool limit":
        c["concurrency"]["pools"]["default_limit"] = -1
    elif how == "run limits in run_coordinator and concurrency":
        # The older placement of the limits, next to `concurrency:`, is rejected.
        c["run_coordinator"]["config"]["max_concurrent_runs"] = 5
    else:
        raise ValueError(how)
    return c


BREAKAGES = [
    "unknown top-level key",
    "wrong type",
    "out-of-range pool limit",
    "run limits in run_coordinator and concurrency",
]


@pytest.mark.parametrize("how", BREAKAGES)
@pytest.mark.parametrize("name", sorted(INSTANCE_FILES))
def test_broken_instance_copies_fail_validation(name, how, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    broken = _break(_load_yaml(INSTANCE_FILES[name]), how)
    with pytest.raises(DagsterInvalidConfigError):
        _validate_instance(_instance_dir(tmp_path, broken))


def test_broken_class_config_fails(monkeypatch):
    config = _load_yaml(INSTANCE_FILES["compose"])
    for var, val in _dummy_env(_env_refs(config)).items():
        monkeypatch.setenv(var, val)
    logs = copy.deepcopy(config["compute_logs"])
    logs["config"]["bucket_name"] = logs["config"].pop("bucket")
    assert _class_config_errors(logs["module"], logs["class"], logs["config"])
    with pytest.raises(AttributeError):
        _class_config_errors("dagster._core.run_coordinator", "QueuedRunCoordinatr", {})


# ------------------------------------------------------------------------------------------------
# docker compose
# ------------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $$ escapes."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            return env.get(m.group("named"), "")
        expr = m.group("braced")
        name = _NAME.match(expr)
        assert name, f"bad interpolation: ${{{expr}}}"
        var, rest = name.group(0), expr[name.end() :]
        current = env.get(var)
        if rest == "":
            return current or ""
        for op in (":-", ":?", ":+", "-", "?", "+"):
            if rest.startswith(op):
                arg = rest[len(op) :]
                unset = current is None or (op.startswith(":") and current == "")
                if op.endswith("-"):
                    return arg if unset else current
                if op.endswith("?"):
                    raise AssertionError(f"required variable {var}: {arg}")
                return "" if unset else arg
        raise AssertionError(f"bad interpolation: ${{{expr}}}")

    return _VAR.sub(repl, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    # Interpolated with an empty environment: the checks see the development defaults.
    return _interpolate(_load_yaml(COMPOSE_FILE), env={})


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: str(v) for k, v in env.items() if v is not None}


def _command(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _flag(cmd: list[str], name: str) -> str | None:
    for i, arg in enumerate(cmd):
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _published_ports(service: Mapping[str, Any]) -> set[int]:
    ports = set()
    for p in service.get("ports") or []:
        container = str(p).split(":")[-1].split("/")[0]
        ports.add(int(container))
    return ports


def _bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """container path -> host path, for bind mounts given relative to deploy/."""
    mounts = {}
    for v in service.get("volumes") or []:
        parts = str(v).split(":")
        if parts[0].startswith("."):
            mounts[parts[1]] = parts[0]
    return mounts


def _s3_service(compose: dict) -> str:
    for name, svc in compose["services"].items():
        if _env(svc).get("MINIO_ROOT_USER") is not None:
            return name
    raise AssertionError("no S3-compatible store service found")


def _bucket(compose: dict) -> str:
    init = compose["services"]["minio-init"]
    bucket = _env(init)["S3_BUCKET"]
    assert "mc mb" in " ".join(_command(init)) and "S3_BUCKET" in " ".join(_command(init))
    return bucket


def test_compose_services(compose):
    services = compose["services"]
    for name in ["webserver", "daemon", "user_code", "postgres", "mlflow", "minio", "minio-init"]:
        assert name in services, name
    assert services["postgres"]["image"].startswith("postgres:15")
    assert "healthcheck" in services["postgres"]


def test_compose_builds_use_deploy_dockerfile(compose):
    stages = {s["name"] for s in _dockerfile_stages()}
    builders = {n: s for n, s in compose["services"].items() if "build" in s}
    assert {"webserver", "daemon", "user_code", "mlflow"} <= set(builders)
    for name, svc in builders.items():
        build = svc["build"]
        assert isinstance(build, dict), f"{name}: build needs context + dockerfile"
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        assert (
            context / build.get("dockerfile", "Dockerfile")
        ).resolve() == DOCKERFILE.resolve(), name
        assert build.get("target", _dockerfile_stages()[-1]["name"]) in stages, name
    assert builders["user_code"]["build"].get("target", "user-code") == "user-code"


def test_compose_user_code_and_workspace(compose):
    user_code = compose["services"]["user_code"]
    cmd = _command(user_code)
    assert (
        "mlops_assets.entrypoint" in cmd and cmd[cmd.index("mlops_assets.entrypoint") - 1] == "-m"
    )
    assert _flag(cmd, "-p") == str(CODE_SERVER_PORT) and _flag(cmd, "-h") == "0.0.0.0"
    exposed = {int(str(p)) for p in user_code.get("expose") or []} | _published_ports(user_code)
    assert CODE_SERVER_PORT in exposed
    assert "grpc-health-check" in user_code["healthcheck"]["test"]

    workspace = _load_yaml(DEPLOY / "workspace.yaml")
    [location] = workspace["load_from"]
    server = location["grpc_server"]
    assert server["host"] == "user_code" and server["port"] == CODE_SERVER_PORT


def test_compose_webserver_and_daemon(compose):
    services = compose["services"]
    web = services["webserver"]
    assert 3000 in _published_ports(web)
    web_cmd = _command(web)
    assert web_cmd[0] == "dagster-webserver" and _flag(web_cmd, "-p") == "3000"
    assert _command(services["daemon"])[:2] == ["dagster-daemon", "run"]
    for name in ["webserver", "daemon", "user_code"]:
        svc = services[name]
        home = _env(svc)["DAGSTER_HOME"]
        mounts = _bind_mounts(svc)
        assert mounts.get(f"{home}/dagster.yaml") == "./dagster.yaml", name
    for name in ["webserver", "daemon"]:
        svc = services[name]
        workspace_path = _flag(_command(svc), "-w")
        assert _bind_mounts(svc).get(workspace_path) == "./workspace.yaml", name


def test_compose_bind_mount_sources_exist(compose):
    for name, svc in compose["services"].items():
        for host in _bind_mounts(svc).values():
            assert (DEPLOY / host).exists(), f"{name}: {host} does not exist"
    init_script = DEPLOY / "postgres" / "10-create-mlflow-db.sh"
    assert init_script.stat().st_mode & 0o111, "init script must be executable"
    assert "MLFLOW_POSTGRES_DB" in init_script.read_text()


def test_compose_mlflow_server(compose):
    services = compose["services"]
    pg = _env(services["postgres"])
    mlflow = services["mlflow"]
    cmd = _command(mlflow)
    assert cmd[:2] == ["mlflow", "server"]
    backend = urlparse(_flag(cmd, "--backend-store-uri"))
    assert backend.scheme.startswith("postgresql")
    assert backend.hostname == "postgres" and backend.port == 5432
    assert (backend.username, backend.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    # MLflow needs its own database (created by the init script), not Dagster's.
    assert backend.path.lstrip("/") == pg["MLFLOW_POSTGRES_DB"] != pg["POSTGRES_DB"]

    assert _dbapi_error(_flag(cmd, "--backend-store-uri")) is None
    if backend.scheme.endswith("+psycopg2"):
        mlflow_install = " ".join(r for k, r in _stage("mlflow")["instructions"] if k == "RUN")
        assert "psycopg2" in mlflow_install

    artifacts = _flag(cmd, "--artifacts-destination") or _flag(cmd, "--default-artifact-root")
    assert artifacts and urlparse(artifacts).scheme == "s3"
    assert urlparse(artifacts).netloc == _bucket(compose)
    env = _env(mlflow)
    s3 = urlparse(env["MLFLOW_S3_ENDPOINT_URL"])
    assert s3.hostname == _s3_service(compose)

    port = int(_flag(cmd, "--port"))
    assert port in _published_ports(mlflow)
    # Other containers call http://mlflow:<port>; MLflow 3 only allows listed Host headers.
    import fnmatch

    allowed = _flag(cmd, "--allowed-hosts").split(",")
    assert any(fnmatch.fnmatch(f"mlflow:{port}", pattern) for pattern in allowed)


def test_compose_env_is_consistent(compose):
    services = compose["services"]
    pg = _env(services["postgres"])
    s3_name = _s3_service(compose)
    s3_env = _env(services[s3_name])
    bucket = _bucket(compose)
    mlflow_port = int(_flag(_command(services["mlflow"]), "--port"))

    for name in ["webserver", "daemon", "user_code"]:
        env = _env(services[name])
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres", name
        assert env["DAGSTER_POSTGRES_PORT"] == "5432", name
        assert env["DAGSTER_POSTGRES_USER"] == pg["POSTGRES_USER"], name
        assert env["DAGSTER_POSTGRES_PASSWORD"] == pg["POSTGRES_PASSWORD"], name
        assert env["DAGSTER_POSTGRES_DB"] == pg["POSTGRES_DB"], name
        assert env["DAGSTER_COMPUTE_LOGS_BUCKET"] == bucket, name
        endpoint = urlparse(env["AWS_ENDPOINT_URL"])
        assert (endpoint.hostname, endpoint.port) == (s3_name, 9000), name
        assert env["AWS_ACCESS_KEY_ID"] == s3_env["MINIO_ROOT_USER"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == s3_env["MINIO_ROOT_PASSWORD"], name

    env = _env(services["user_code"])
    storage = urlparse(env["MLOPS_STORAGE_URI"])
    assert storage.scheme == "s3" and storage.netloc == bucket
    tracking = urlparse(env["MLFLOW_TRACKING_URI"])
    assert (tracking.hostname, tracking.port) == ("mlflow", mlflow_port)
    assert env["MLOPS_SPECS"]
    for path in env["MLOPS_SPECS"].split(","):
        mount_points = [c for c in _bind_mounts(services["user_code"]) if path.startswith(c + "/")]
        assert mount_points, f"{path} is not inside a mounted folder"
    # The webhook is a secret: passed through from the environment, never written in the file.
    raw = _load_yaml(COMPOSE_FILE)
    assert raw["x-mlops-env"]["MLOPS_WEBHOOK_URL"] is None


def test_compose_instance_resolves_to_the_compose_postgres(compose, monkeypatch):
    """deploy/dagster.yaml + user_code's env -> a connection string to the postgres service."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    env = _env(compose["services"]["user_code"])
    for var in _env_refs(_load_yaml(INSTANCE_FILES["compose"])):
        assert var in env, f"user_code does not set {var}, which deploy/dagster.yaml needs"
        monkeypatch.setenv(var, env[var])
    storage = _load_yaml(INSTANCE_FILES["compose"])["storage"]["postgres"]
    result = process_config(resolve_to_config_type(DagsterPostgresStorage.config_type()), storage)
    assert result.success, result.errors
    url = urlparse(pg_url_from_config(result.value))
    pg = _env(compose["services"]["postgres"])
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert url.path.lstrip("/") == pg["POSTGRES_DB"]


def test_compose_depends_on_graph(compose):
    services = compose["services"]
    graph: dict[str, list[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition", "service_started")
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }, condition
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
        graph[name] = list(deps)

    # No cycles (depth-first search).
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        assert state.get(node) != 1, f"dependency cycle: {path + [node]}"
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph[node]:
            visit(dep, path + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])
    assert "postgres" in graph["mlflow"] and "user_code" in graph["webserver"]


# ------------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    instructions, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        buf = ""
    return instructions


def _substitute(text: str, variables: Mapping[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


def _dockerfile_stages() -> list[dict]:
    """Stages in order, with ARG/ENV defaults substituted into their instructions."""
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default.strip('"')
            continue
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            base = _substitute(m.group(1), global_args)
            parent = next((s for s in stages if s["name"] == base), None)
            stages.append(
                {
                    "name": m.group(2) or str(len(stages)),
                    "base": base,
                    "parent": parent["name"] if parent else None,
                    "vars": dict(parent["vars"]) if parent else {},
                    "instructions": [],
                }
            )
            continue
        stage = stages[-1]
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            stage["vars"][name] = default.strip('"')
        elif keyword == "ENV":
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest):
                stage["vars"][name] = value
        stage["instructions"].append((keyword, _substitute(rest, stage["vars"])))
    return stages


def _stage(name: str) -> dict:
    return next(s for s in _dockerfile_stages() if s["name"] == name)


def _chain(name: str) -> list[tuple[str, str]]:
    """Instructions of a stage including those of the stages it is built FROM."""
    stage = _stage(name)
    parent = _chain(stage["parent"]) if stage["parent"] else []
    return parent + stage["instructions"]


def test_dockerfile_stages_and_base_image():
    stages = _dockerfile_stages()
    assert [s["name"] for s in stages] == ["dagster", "mlflow", "user-code"]
    assert stages[-1]["name"] == "user-code", "the default build target must be the user code"
    for stage in stages:
        root = stage
        while root["parent"]:
            root = _stage(root["parent"])
        assert root["base"] == "python:3.11-slim", stage["name"]


def test_dockerfile_installs_torch_before_the_package():
    chain = _chain("user-code")
    runs = [rest for keyword, rest in chain if keyword == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "pip install" in r and '"torch==2.13.0"' in r)
    package_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_at < package_at
    torch_run = runs[torch_at]
    assert "--index-url" in torch_run and "whl/cpu" in torch_run, (
        "default torch must be the CPU build"
    )
    # torch==2.13.0 satisfies the package's own torch requirement, so pip keeps it.
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert torch_req.specifier.contains("2.13.0")


def test_dockerfile_pins_match_pyproject():
    pins = _pyproject_pins()
    dagster_vars = _stage("dagster")["vars"]
    assert dagster_vars["DAGSTER_VERSION"] == pins["dagster"] == pins["dagster-webserver"]
    assert dagster_vars["DAGSTER_LIBS_VERSION"] == pins["dagster-aws"] == pins["dagster-postgres"]
    assert _stage("mlflow")["vars"]["MLFLOW_VERSION"] == pins["mlflow"]
    install = " ".join(r for k, r in _stage("dagster")["instructions"] if k == "RUN")
    for package in ["dagster", "dagster-webserver", "dagster-postgres", "dagster-aws"]:
        assert f'"{package}=={pins[package]}"' in install, package
    # LightGBM's wheel needs the OpenMP runtime, which the slim image lacks.
    assert "libgomp1" in install


def test_dockerfile_runs_as_non_root():
    for stage in _dockerfile_stages():
        chain = _chain(stage["name"])
        users = [rest for keyword, rest in chain if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in {"root", "0"}, stage["name"]
        last_user = max(i for i, (k, _) in enumerate(chain) if k == "USER")
        last_run = max(i for i, (k, _) in enumerate(chain) if k == "RUN")
        assert last_user > last_run, f"{stage['name']}: switch to the unprivileged user last"


def test_dockerfile_user_code_entrypoint():
    instructions = _stage("user-code")["instructions"]
    assert ("EXPOSE", str(CODE_SERVER_PORT)) in instructions
    [cmd] = [json.loads(rest) for keyword, rest in instructions if keyword == "CMD"]
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == "mlops_assets.entrypoint"
    assert _flag(cmd, "-p") == str(CODE_SERVER_PORT) and _flag(cmd, "-h") == "0.0.0.0"
    health = next(rest for keyword, rest in instructions if keyword == "HEALTHCHECK")
    assert "grpc-health-check" in health and str(CODE_SERVER_PORT) in health
    # Everything COPY'd comes from the repository root (the build context).
    for keyword, rest in instructions:
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert list(REPO.glob(source)) or "*" in source, f"COPY source {source} missing"
    assert (REPO / "pyproject.toml").is_file() and (REPO / "mlops_assets").is_dir()


# ------------------------------------------------------------------------------------------------
# Helm values for the official dagster chart
# ------------------------------------------------------------------------------------------------


def _chart_schema() -> dict:
    """The vendored chart schema, with its external Kubernetes $refs dropped.

    The chart refers to Kubernetes core types by URL (kubernetes-json-schema); with no network
    those are treated as open objects. The sibling keywords (`type`, `additionalProperties`) stay.
    """

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: strip(v)
                for k, v in node.items()
                if not (k == "$ref" and isinstance(v, str) and not v.startswith("#"))
            }
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(HELM_SCHEMA.read_text()))


def _values_validator(schema: dict):
    import jsonschema
    from jsonschema import validators

    # A values file is an overlay: Helm merges it over the chart's defaults before validating,
    # so `required` is satisfied by the defaults. Everything else (unknown keys where the chart
    # forbids them, types, enums) applies to what we set.
    base = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    overlay = validators.extend(base, {"required": lambda *args: iter(())})
    return overlay(schema)


def _resolve(schema: dict, node: dict) -> list[dict]:
    """Follow local $refs and anyOf/oneOf/allOf branches down to concrete schema nodes."""
    out = []
    if "$ref" in node:
        target = schema
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        out += _resolve(schema, target)
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            out += _resolve(schema, branch)
    rest = {k: v for k, v in node.items() if k not in {"$ref", "anyOf", "oneOf", "allOf"}}
    if rest:
        out.append(rest)
    return out


def _unknown_key_paths(schema: dict, node: dict, value: Any, path: str = "") -> list[str]:
    """Keys we set that the schema does not model (stricter than jsonschema where upstream
    leaves objects open, e.g. a user deployment entry)."""
    nodes = _resolve(schema, node)
    problems = []
    if isinstance(value, dict):
        modeled = [n for n in nodes if n.get("properties")]
        if not modeled:
            return []  # free-form object: env maps, Kubernetes objects, ...
        for key, sub in value.items():
            children = [n["properties"][key] for n in modeled if key in n["properties"]]
            if not children:
                problems.append(f"{path}.{key}".lstrip("."))
                continue
            for child in children[:1]:
                problems += _unknown_key_paths(schema, child, sub, f"{path}.{key}")
    elif isinstance(value, list):
        items = [n["items"] for n in nodes if isinstance(n.get("items"), dict)]
        for i, item in enumerate(value):
            for child in items[:1]:
                problems += _unknown_key_paths(schema, child, item, f"{path}[{i}]")
    return problems


def _helm_problems(values: dict) -> list[str]:
    schema = _chart_schema()
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _values_validator(schema).iter_errors(values)
    ]
    return errors + [f"unknown key {p}" for p in _unknown_key_paths(schema, schema, values)]


def test_vendored_chart_schema_is_the_recorded_upstream_file():
    data = HELM_SCHEMA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHART_SCHEMA_SHA256
    readme = (DEPLOY / "README.md").read_text()
    assert CHART_SCHEMA_COMMIT in readme and CHART_SCHEMA_SHA256 in readme
    schema = json.loads(data)
    for key in ["dagster-user-deployments", "runLauncher", "dagsterDaemon", "concurrency"]:
        assert key in schema["properties"], key


def test_helm_values_match_the_chart_schema():
    problems = _helm_problems(_load_yaml(HELM_VALUES))
    assert not problems, problems


def test_helm_broken_values_are_caught():
    values = _load_yaml(HELM_VALUES)

    typo = copy.deepcopy(values)  # the chart forbids unknown keys here
    typo["runLauncher"]["config"]["k8sRunLauncher"]["jobNamspace"] = "mlops"
    assert any("jobNamspace" in p for p in _helm_problems(typo))

    wrong_type = copy.deepcopy(values)
    wrong_type["dagster-user-deployments"]["deployments"][0]["port"] = "4000"
    assert _helm_problems(wrong_type)

    open_object = copy.deepcopy(values)  # upstream leaves this object open; the key walk does not
    open_object["dagster-user-deployments"]["deployments"][0]["codeServerArg"] = ["-m", "x"]
    assert any("codeServerArg" in p for p in _helm_problems(open_object))

    bad_enum = copy.deepcopy(values)
    bad_enum["runLauncher"]["type"] = "K8sJobLauncher"
    assert _helm_problems(bad_enum)


def test_helm_values_semantics():
    values = _load_yaml(HELM_VALUES)
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher" and launcher["config"]["k8sRunLauncher"]

    user = values["dagster-user-deployments"]
    assert user["enabled"] and user["enableSubchart"]
    [deployment] = user["deployments"]
    args = deployment.get("codeServerArgs") or deployment.get("dagsterApiGrpcArgs")
    assert args[args.index("-m") + 1] == "mlops_assets.entrypoint"
    assert deployment["port"] == CODE_SERVER_PORT
    assert deployment["image"]["repository"] and str(deployment["image"]["tag"]) != "latest"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    env = {e["name"]: e for e in deployment["env"]}
    for var in ["MLOPS_SPECS", "MLOPS_STORAGE_URI", "MLFLOW_TRACKING_URI"]:
        assert env[var].get("value"), var
    assert "MLOPS_WEBHOOK_URL" not in env or "valueFrom" in env["MLOPS_WEBHOOK_URL"]
    assert deployment["envSecrets"], "secrets (webhook, AWS keys) come from a Secret"

    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    # The chart fails to render when run limits are set in both places.
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    assert daemon["runRetries"]["enabled"] is True

    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["runs"]["maxConcurrentRuns"] > 0
    assert concurrency["pools"]["defaultLimit"] >= 1

    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager" and logs["config"]["s3ComputeLogManager"]["bucket"]
    assert values["postgresql"]["enabled"] is False
    scheme = values["postgresql"].get("postgresqlScheme", "postgresql")
    assert _dbapi_error(f"{scheme}://u:p@db:5432/dagster") is None
    assert (
        "k8s_job_executor" in HELM_VALUES.read_text()
        and "nvidia.com/gpu" in HELM_VALUES.read_text()
    )


def test_helm_run_monitoring_keys_are_rendered_by_the_chart():
    # runMonitoring is an open object in the schema; these are the keys the chart's
    # templates/configmap-instance.yaml reads.
    known = {
        "enabled",
        "startTimeoutSeconds",
        "cancelTimeoutSeconds",
        "maxResumeRunAttempts",
        "pollIntervalSeconds",
        "freeSlotsAfterRunEndSeconds",
    }
    assert set(_load_yaml(HELM_VALUES)["dagsterDaemon"]["runMonitoring"]) <= known


def _k8s_config_schema():
    """dagster-k8s's schema for the `dagster-k8s/config` tag (copied from dagster_k8s.job when
    dagster-k8s, which this project does not install, is absent)."""
    try:
        from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA

        return USER_DEFINED_K8S_JOB_CONFIG_SCHEMA
    except ImportError:
        from dagster import Enum, EnumValue, Field, Permissive, Shape

        return Shape(
            {
                "container_config": Permissive(),
                "pod_template_spec_metadata": Permissive(),
                "pod_spec_config": Permissive(),
                "job_config": Permissive(),
                "job_metadata": Permissive(),
                "job_spec_config": Permissive(),
                "merge_behavior": Field(
                    Enum("K8sConfigMergeBehavior", [EnumValue("SHALLOW"), EnumValue("DEEP")]),
                    is_required=False,
                ),
            }
        )


def test_gpu_training_tags():
    from dagster._config import validate_config

    tags = _load_yaml(GPU_TAGS)["op_tags"]
    k8s_config = tags["dagster-k8s/config"]
    result = validate_config(_k8s_config_schema(), k8s_config)
    assert result.success, [e.message for e in result.errors]
    assert k8s_config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    json.dumps(tags)  # Dagster stores tag values as JSON strings

    broken = copy.deepcopy(k8s_config)
    broken["container"] = broken.pop("container_config")
    assert not validate_config(_k8s_config_schema(), broken).success


# ------------------------------------------------------------------------------------------------
# ECS
# ------------------------------------------------------------------------------------------------


def _ecs_model():
    # The ECS API model that ships inside botocore: no network, no credentials.
    from botocore.loaders import create_loader
    from botocore.model import ServiceModel

    return ServiceModel(create_loader().load_service_model("ecs", "service-2"), "ecs")


def _botocore_errors(operation: str, params: dict) -> str:
    from botocore.validate import ParamValidator

    shape = _ecs_model().operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else ""


def test_ecs_task_definition_matches_the_ecs_api():
    task_def = json.loads(ECS_TASK_DEF.read_text())
    assert not _botocore_errors("RegisterTaskDefinition", task_def)

    broken = copy.deepcopy(task_def)
    broken["containerDefinitions"][0]["portMapping"] = broken["containerDefinitions"][0].pop(
        "portMappings"
    )
    assert "portMapping" in _botocore_errors("RegisterTaskDefinition", broken)


def test_ecs_task_definition_runs_the_code_server():
    task_def = json.loads(ECS_TASK_DEF.read_text())
    [container] = task_def["containerDefinitions"]
    cmd = container["command"]
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == "mlops_assets.entrypoint"
    assert _flag(cmd, "-p") == str(CODE_SERVER_PORT)
    assert {p["containerPort"] for p in container["portMappings"]} == {CODE_SERVER_PORT}
    env = {e["name"]: e["value"] for e in container["environment"]}
    secrets = {s["name"] for s in container["secrets"]}
    # Runs launched by EcsRunLauncher use the image the code server reports.
    assert env["DAGSTER_CURRENT_IMAGE"] == container["image"]
    assert {"MLOPS_WEBHOOK_URL", "DAGSTER_POSTGRES_PASSWORD"} <= secrets
    assert not secrets & set(env), "a secret must not also be a plain env var"
    assert container["user"].split(":")[0] not in {"root", "0"}

    # Run tasks get their env from the daemon (env_vars) and secrets from the launcher config:
    # together they must cover what the instance config and the package read.
    launcher = _load_yaml(INSTANCE_FILES["ecs"])["run_launcher"]["config"]
    run_env = set(launcher["env_vars"]) | {s["name"] for s in launcher["secrets"]}
    needed = _env_refs(_load_yaml(INSTANCE_FILES["ecs"])) - {
        "ECS_EXECUTION_ROLE_ARN",
        "ECS_TASK_ROLE_ARN",
    }
    needed |= {"MLOPS_SPECS", "MLOPS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLOPS_WEBHOOK_URL"}
    assert needed <= run_env, needed - run_env
    assert needed <= set(env) | secrets, needed - set(env) - secrets

    workspace = _load_yaml(DEPLOY / "ecs" / "workspace.yaml")
    [location] = workspace["load_from"]
    assert location["grpc_server"]["port"] == CODE_SERVER_PORT


def test_ecs_run_task_kwargs_match_the_ecs_api():
    launcher = _load_yaml(INSTANCE_FILES["ecs"])["run_launcher"]["config"]
    kwargs = dict(launcher["run_task_kwargs"], taskDefinition="mlops-run")
    assert not _botocore_errors("RunTask", kwargs)
    assert launcher["run_resources"]["cpu"] and launcher["run_resources"]["memory"]
