"""`MLOpsPipelineComponent` in a sandboxed `defs` folder: scaffold, load, build, run, reject.

The sandbox is Dagster's own `create_defs_folder_sandbox`, so the YAML goes through the
same loader `dg` and `dagster dev` use.
"""

import datetime as dt
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from mlops_assets.component import MLOpsPipelineComponent
from mlops_assets.definitions import build_mlops_defs
from mlops_assets.demo.data import write_day
from mlops_assets.pipeline import LIFECYCLE as STAGES
from mlops_assets.spec import PipelineSpec

PUBLIC_TYPE = "mlops_assets.MLOpsPipelineComponent"
RESOURCE_ENV = ("MLOPS_STORAGE_URI", "AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI")
DG = Path(sys.executable).parent / "dg"  # the dg CLI of the environment running the tests


@pytest.fixture
def no_resource_env(monkeypatch):
    for var in RESOURCE_ENV:
        monkeypatch.delenv(var, raising=False)


def _write_defs(sandbox, folder: str, text: str) -> Path:
    path = sandbox.defs_folder_path / folder
    path.mkdir(parents=True)
    (path / "defs.yaml").write_text(textwrap.dedent(text))
    return path


def _small_attributes(source: Path, state: Path) -> str:
    return f"""\
    type: {PUBLIC_TYPE}
    attributes:
      name: churn
      source: {{path: "{source}", settle_seconds: 0}}
      target: defaulted
      id_column: loan_id
      timestamp_column: applied_at
      group_column: gender
      min_rows: 200
      features:
        - {{name: age, type: numeric, min: 18, max: 100}}
        - {{name: income, type: numeric, min: 0}}
        - {{name: credit_score, type: numeric, min: 300, max: 850}}
        - {{name: interest_rate, type: numeric, min: 0, max: 40}}
        - {{name: debt_to_income, type: numeric, min: 0, max: 100, max_null_fraction: 0.05}}
        - {{name: home_ownership, type: categorical, categories: [RENT, OWN, MORTGAGE]}}
      model:
        lightgbm: {{num_boost_round: 40}}
      drift: {{evidently_sample_rows: 2000}}
      state_dir: "{state}"
    """


def _chain(exc: BaseException) -> str:
    """Every message in the exception chain: the loader wraps the validation error."""
    return "".join(traceback.format_exception(exc))


def test_component_fields_are_the_spec_fields():
    """One schema: every PipelineSpec field, same type and default, plus resource locations."""
    fields = MLOpsPipelineComponent.model_fields
    for name, spec_field in PipelineSpec.model_fields.items():
        assert fields[name].annotation == spec_field.annotation, name
        assert fields[name].get_default(call_default_factory=True) == spec_field.get_default(
            call_default_factory=True
        ), name
    assert set(fields) - set(PipelineSpec.model_fields) == {
        "storage_uri", "s3_endpoint_url", "mlflow_tracking_uri"
    }
    assert MLOpsPipelineComponent.get_model_cls() is MLOpsPipelineComponent


def test_scaffolded_defs_yaml_loads_and_builds(no_resource_env):
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=MLOpsPipelineComponent, defs_path="loan_default"
        )
        text = (path / "defs.yaml").read_text()
        assert text.count("#") > 20, "the scaffolded spec should be commented"
        assert yaml.safe_load(text)["attributes"]["name"] == "loan_default"

        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, MLOpsPipelineComponent)
            graph = defs.resolve_asset_graph()
            for stage in STAGES:
                key = dg.AssetKey(["loan_default", stage])
                assert graph.has(key), stage
                assert graph.get(key).group_name == "loan_default"
            # The same jobs, sensors and schedules as build_mlops_defs gives for the spec.
            direct = build_mlops_defs(component.to_spec(path))
            for kind in ("jobs", "sensors", "schedules"):
                names = {d.name for d in getattr(defs, kind)}
                assert names == {d.name for d in getattr(direct, kind)}, kind
                assert all(n.startswith("loan_default_") for n in names), names
            assert defs.resolve_job_def("loan_default_bootstrap_job")
            assert defs.resolve_sensor_def("loan_default_new_data_sensor")
            assert defs.resolve_schedule_def("loan_default_batch_inference_schedule")

            # Relative paths resolve against the component's folder; no env -> embedded defaults.
            folder = path.resolve()
            storage = defs.resources["loan_default_storage"]
            registry = defs.resources["loan_default_mlflow"]
            assert storage.base_uri == str(folder / ".mlops" / "artifacts")
            assert registry.tracking_uri == f"sqlite:///{folder / '.mlops' / 'mlflow.db'}"
            assert component.to_spec(folder).source.path == str(folder / "landing")


def test_scaffold_name_param_and_env_templated_resources(monkeypatch):
    monkeypatch.setenv("MLOPS_STORAGE_URI", "s3://bucket/mlops")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            component_cls=MLOpsPipelineComponent,
            defs_path="pipelines/one",
            scaffold_params={"name": "churn"},
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            storage = defs.resources["churn_storage"]
            assert storage.base_uri == "s3://bucket/mlops"
            assert storage.s3_endpoint_url == "http://127.0.0.1:9000"
            assert defs.resources["churn_s3"].endpoint_url == "http://127.0.0.1:9000"
            registry = defs.resources["churn_mlflow"]
            assert registry.tracking_uri == registry.ui_url == "http://mlflow:5000"


def test_only_templates_are_rendered(tmp_path, monkeypatch, no_resource_env):
    """Plain strings stay strings ("1" is not turned into 1); templates render, null when unset."""
    monkeypatch.setenv("MLOPS_TEST_TARGET", "defaulted")
    monkeypatch.delenv("MLOPS_TEST_UNSET_VARIABLE", raising=False)
    text = textwrap.dedent(_small_attributes(tmp_path / "landing", tmp_path / "state"))
    text = text.replace("  target: defaulted\n", '  target: "{{ env.MLOPS_TEST_TARGET }}"\n')
    grade = '    - {name: grade, type: categorical, categories: ["1", "2", "True"]}\n'
    text = text.replace("  features:\n", "  features:\n" + grade)
    text += '  storage_uri: "{{ env.MLOPS_TEST_UNSET_VARIABLE }}"\n'
    with create_defs_folder_sandbox() as sandbox:
        path = _write_defs(sandbox, "churn", text)
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert component.target == "defaulted"
            assert component.features[0].categories == ["1", "2", "True"]
            assert component.storage_uri is None
            assert defs.resources["churn_storage"].base_uri == str(tmp_path / "state" / "artifacts")


def test_docs_sample_defs_yaml_loads(monkeypatch, no_resource_env):
    monkeypatch.delenv("CHURN_LANDING", raising=False)
    sample = Path(__file__).resolve().parents[2] / "docs" / "defs.yaml"
    with create_defs_folder_sandbox() as sandbox:
        path = _write_defs(sandbox, "churn", sample.read_text())
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert component.to_spec(path).source.path == str(path.resolve() / "landing")
            assert defs.resolve_asset_graph().has(dg.AssetKey(["churn", "drift_report"]))


def test_handwritten_defs_yaml_runs_the_lifecycle(tmp_path, no_resource_env):
    landing = tmp_path / "landing"
    file_name = write_day(landing, dt.date(2026, 1, 1), n_rows=3000).name
    with create_defs_folder_sandbox() as sandbox:
        path = _write_defs(sandbox, "churn", _small_attributes(landing, tmp_path / "state"))
        with (
            sandbox.load_component_and_build_defs(defs_path=path) as (_, defs),
            dg.instance_for_test() as instance,
        ):
            instance.add_dynamic_partitions("churn_arrivals", [file_name])
            result = defs.resolve_job_def("churn_bootstrap_job").execute_in_process(
                instance=instance, partition_key=file_name
            )
            assert result.success
            materialized = {e.asset_key for e in result.get_asset_materialization_events()}
            assert dg.AssetKey(["churn", "registered_model"]) in materialized
            assert {dg.AssetKey(["churn", s]) for s in STAGES} <= materialized
    assert (tmp_path / "state" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ("  min_rows: 200\n", "  min_rows: 200\n  colour: red\n", "attributes.colour"),
        ("  min_rows: 200\n", "  min_rows: lots\n", "attributes.min_rows"),
        ("{num_boost_round: 40}", "{num_boost_round: x}",
         "attributes.model.lightgbm.num_boost_round"),
        ("  group_column: gender\n", '  group_column: "{{ 7 }}"\n', "attributes.group_column"),
        ("  group_column: gender\n", "  group_column: defaulted\n", "group_column: 'defaulted' is also the target"),
    ],
    ids=["unknown", "wrong-type", "nested-wrong-type", "template-renders-wrong-type", "role-collision"],
)
def test_bad_attributes_fail_at_load_naming_the_field(tmp_path, replace, by, field):
    text = textwrap.dedent(_small_attributes(tmp_path / "landing", tmp_path / "state"))
    assert replace in text
    with create_defs_folder_sandbox() as sandbox:
        path = _write_defs(sandbox, "bad", text.replace(replace, by))
        with (
            pytest.raises(Exception) as caught,  # the loader wraps the validation error
            sandbox.load_component_and_build_defs(defs_path=path),
        ):
            pass
    message = _chain(caught.value)
    assert field in message, message
    assert "defs.yaml:" in message  # the file and line of the offending attribute


def test_dg_list_components_shows_the_component(tmp_path):
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1"}
    out = subprocess.run(
        [str(DG), "list", "components"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert PUBLIC_TYPE in out.stdout, (
        "mlops_assets/__init__.py must export MLOpsPipelineComponent (the registry module is "
        "`mlops_assets`: see the dagster_dg_cli.registry_modules entry point)\n"
        + out.stdout[-2000:]
    )


def test_the_scaffolded_component_reaches_a_first_champion_on_realistic_data(no_resource_env):
    """Default settings, one day of 5,000 realistic rows: the sample-size-aware gate promotes a
    first model instead of holding it on noise (an AUC floor, a gap between groups of 30)."""
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=MLOpsPipelineComponent, defs_path="loans")
        file_name = write_day(path / "landing", dt.date(2026, 1, 1), n_rows=5_000, seed=11).name
        with (
            sandbox.load_component_and_build_defs(defs_path=path) as (_, defs),
            dg.instance_for_test() as instance,
        ):
            instance.add_dynamic_partitions("loans_arrivals", [file_name])
            result = defs.resolve_job_def("loans_bootstrap_job").execute_in_process(
                instance=instance, partition_key=file_name, raise_on_error=False)
            (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "gate"]
            assert gate.passed, gate.description
            champion = defs.resources["loans_mlflow"].champion("loans")
            assert champion is not None and champion.tags["approval"] == "approved"
