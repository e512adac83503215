"""`MLOpsPipelineComponent`: one ML pipeline declared in a Dagster `defs.yaml`.

The component's attributes ARE the `PipelineSpec` fields (the class inherits them), plus
three optional attributes that say where the resources live::

    type: mlops_assets.MLOpsPipelineComponent
    attributes:
      name: churn
      source: {path: data/landing}
      target: churned
      ...
      storage_uri: "{{ env.MLOPS_STORAGE_URI }}"

There is no second schema: the YAML is validated by `PipelineSpec` itself, so an unknown
attribute or a wrong type fails when the definitions load, with the YAML path named.
Relative paths (`source.path`, `ground_truth.path`, `state_dir`, a local `storage_uri`)
resolve against the folder that holds the `defs.yaml`.

Loading this module imports dagster and the spec; the stages come in when the definitions
are built, and the heavy libraries (torch, mlflow, evidently, onnxruntime, lightgbm) only
inside the asset bodies that use them (`mlops_assets_tests/test_imports.py` checks it).
"""

from __future__ import annotations

import contextlib
import copy
import re
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster.components.resolved.errors import ResolutionException
from pydantic import BaseModel, Field, ValidationError, field_validator

from mlops_assets.spec import (
    NAME_RE,
    ModelSpec,
    PipelineSpec,
    _is_absolute,
    _resolve_relative_paths,
)

if TYPE_CHECKING:
    from dagster_aws.s3 import S3Resource

    from mlops_assets.resources import ArtifactStore, MLflowRegistry
    from mlops_assets.translator import MLOpsTranslator

# Attributes that are not part of PipelineSpec: where the resources live.
RESOURCE_ATTRIBUTES = ("storage_uri", "s3_endpoint_url", "mlflow_tracking_uri")


class _ValidatedBySpec(dg.Resolvable):
    """A `Resolvable` whose YAML schema is the pydantic class itself.

    Dagster's default derives a schema model field by field. It cannot derive through
    PipelineSpec's nested models (their constrained fields such as ``Field(ge=0)`` are
    rejected) and it would drop the spec's cross-field validators. So the schema is the
    class; templates (``{{ env.X }}``) are rendered after parsing, and the rendered
    attributes are validated again.

    This lives in a mixin because the spec has a field named ``model``: a method defined
    in the component's own body would clash with that field, one on a base class does not
    (instances read the field, the class reads the classmethod).
    """

    @classmethod
    def model(cls) -> type[BaseModel]:
        return cls  # type: ignore[return-value]

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel):
        raw = model.model_dump(mode="python", exclude_unset=True)
        rendered = _render_templates(context, raw)
        if rendered == raw:
            return model
        try:
            return cls.model_validate(rendered)  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise ResolutionException(_located_errors(exc, context)) from None


def _render_templates(context: dg.ResolutionContext, value: Any) -> Any:
    """Render the strings that hold a template; leave every other value as written.

    `context.resolve_value` alone would also pass plain strings through Jinja's native
    renderer, which turns "1" into 1 and "True" into True: a categorical feature with
    categories ["1", "2"] would no longer validate.
    """
    if isinstance(value, dict):
        return {k: _render_templates(context.at_path(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render_templates(context.at_path(i), v) for i, v in enumerate(value)]
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return context.resolve_value(value)
    return value


def _located_errors(exc: ValidationError, context: dg.ResolutionContext) -> str:
    """One line per problem, each naming the YAML path (and the file:line when known). A rule
    that spans fields (e.g. group_column equal to the target) names each field it is about."""
    from mlops_assets.spec_rules import SpecRuleError

    lines = []
    tree = context.source_position_tree
    for err in exc.errors():
        rule = (err.get("ctx") or {}).get("error")
        found = ([((*err["loc"], *path), msg) for path, msg in rule.problems] if isinstance(rule, SpecRuleError)
                 else [(err["loc"], err["msg"].removeprefix("Value error, "))])
        got = repr(err.get("input"))
        for loc, msg in found:
            path = [*context.path, *loc]
            where = ".".join(str(p) for p in path)
            if tree is not None:
                with contextlib.suppress(Exception):  # a location is a nicety, the message is not
                    where = f"{where} at {tree.lookup_closest_and_path(path, None)[0]}"
            shown = f" (got {got})" if len(got) <= 80 and not isinstance(rule, SpecRuleError) else ""
            lines.append(f"{where}: {msg}{shown}")
    head = "invalid MLOpsPipelineComponent attributes (after rendering templates):"
    return head + "\n  " + "\n  ".join(lines)


class MLOpsPipelineScaffoldParams(BaseModel):
    name: str | None = Field(
        None, description="Pipeline name. Default: the target folder's name, made an identifier."
    )


class MLOpsPipelineScaffolder(dg.Scaffolder[MLOpsPipelineScaffoldParams]):
    """Writes a `defs.yaml` with a complete, commented starting spec (the demo's loan schema)."""

    @classmethod
    def get_scaffold_params(cls) -> type[MLOpsPipelineScaffoldParams]:
        return MLOpsPipelineScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[MLOpsPipelineScaffoldParams]) -> None:
        if request.scaffold_format == "python":
            from dagster.components.component_scaffolding import scaffold_component

            scaffold_component(request, {})
            return
        params = request.params or MLOpsPipelineScaffoldParams()
        name = params.name or _identifier(request.target_path.name)
        if not NAME_RE.match(name):
            raise ValueError(f"name: '{name}' must match {NAME_RE.pattern}")
        text = render_defs_yaml(request.type_name, name)
        if request.append:
            with open(request.target_path, "a", encoding="utf-8") as fh:
                fh.write("---\n" + text)
        else:
            request.target_path.mkdir(parents=True, exist_ok=True)
            (request.target_path / "defs.yaml").write_text(text, encoding="utf-8")


def _identifier(text: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"pipeline_{name}".rstrip("_")
    return name[:63]


def render_defs_yaml(type_name: str, name: str) -> str:
    """The scaffolded `defs.yaml`: the demo's loan-default spec, every section commented."""
    return _DEFS_TEMPLATE.replace("__TYPE__", type_name).replace("__NAME__", name)


_DEFS_TEMPLATE = textwrap.dedent(
    """\
    # One ML pipeline: seven assets <name>/raw_data ... <name>/drift_report, their checks,
    # jobs, sensors and a batch-inference schedule. The attributes are PipelineSpec fields.
    # Relative paths (source.path, state_dir, a local storage_uri, ...) resolve against
    # this folder. Strings may use templates, e.g. "{{ env.MY_VAR }}" (unset -> null).
    type: __TYPE__
    attributes:
      # The pipeline's name: asset key prefix, group name and MLflow model name.
      name: __NAME__
      source:
        path: landing          # a folder or s3://bucket/prefix where data files arrive
        # asset_key: [raw, loans]   # ...or an upstream asset you already have (not both)
        format: auto           # auto | parquet | csv
        settle_seconds: 2      # a file is complete once it has not changed for this long
      target: defaulted        # the label column (binary labels are 0/1)
      task: binary             # binary | multiclass | regression
      id_column: loan_id       # drives the deterministic train/holdout split
      timestamp_column: applied_at
      group_column: gender     # slice and fairness metrics; not a model input
      min_rows: 500            # smaller batches are rejected by validation
      features:                # model inputs and the rules every batch must pass
        - {name: age, type: numeric, min: 18, max: 100}
        - {name: income, type: numeric, min: 0}
        - {name: employment_years, type: numeric, min: 0, max: 60, max_null_fraction: 0.05}
        - {name: credit_score, type: numeric, min: 300, max: 850}
        - {name: loan_amount, type: numeric, min: 0}
        - {name: term_months, type: numeric, min: 12, max: 84}
        - {name: interest_rate, type: numeric, min: 0, max: 40}
        - {name: debt_to_income, type: numeric, min: 0, max: 100, max_null_fraction: 0.05}
        - {name: num_open_accounts, type: numeric, min: 0}
        - {name: delinquencies_2y, type: numeric, min: 0}
        - name: purpose
          type: categorical
          categories: [debt_consolidation, credit_card, home_improvement, car, medical,
                       small_business]
        - {name: home_ownership, type: categorical, categories: [RENT, OWN, MORTGAGE]}
        - {name: region, type: categorical, categories: [north, south, east, west]}
      split:                   # by a hash of id_column: a row never changes side
        holdout_fraction: 0.2
        validation_fraction: 0.1
      model:
        trainer: lightgbm
        seed: 42
        lightgbm:
          num_boost_round: 300
          learning_rate: 0.05
          num_leaves: 31
          early_stopping_rounds: 30
      gate:                    # the champion alias moves only when every rule passes
        min_main_metric: 0.70  # ROC-AUC floor (main metric defaults by task)
        max_regression: 0.02   # allowed drop vs the current champion, same holdout rows
        max_fairness_gap: 0.10 # largest metric gap between groups of group_column
        max_p99_latency_ms: 50
      drift:
        share_threshold: 0.5   # dataset drift when this share of features drift
        key_features: [interest_rate, credit_score]  # any of these drifting triggers a retrain
        evidently_sample_rows: 20000
      automation:
        batch_inference_cron: "0 6 * * *"
        timezone: UTC
        sensor_interval_seconds: 30
        retrain_on_drift: true
      state_dir: .mlops        # embedded default home: local artifacts and a sqlite MLflow store
      # Production resources; unset (null) keeps the embedded defaults under state_dir.
      storage_uri: "{{ env.MLOPS_STORAGE_URI }}"          # e.g. s3://bucket/mlops
      s3_endpoint_url: "{{ env.AWS_ENDPOINT_URL }}"       # S3-compatible stores (MinIO, ...)
      mlflow_tracking_uri: "{{ env.MLFLOW_TRACKING_URI }}" # e.g. http://mlflow:5000
    """
)


# The spec has a field named `model`, and `Resolvable.model()` is how Dagster asks for a
# component's schema. The field is re-stated below (same type and FieldInfo as in
# PipelineSpec) so pydantic does not take the classmethod as its default; pydantic then
# warns that the field shadows the classmethod, which is intended: instances read the
# field, the class reads the classmethod.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "model" .* shadows an attribute')

    @dg.scaffold_with(MLOpsPipelineScaffolder)
    class MLOpsPipelineComponent(dg.Component, _ValidatedBySpec, PipelineSpec, dg.Model):
        """One ML pipeline as assets: checked data, gated training, MLflow, ONNX scoring, drift.

        Seven assets `[<name>, <stage>]` from raw data to a registered champion model, batch
        predictions and drift reports, with their checks, jobs, sensors and schedule. The
        attributes are the PipelineSpec fields plus optional resource locations
        (`storage_uri`, `s3_endpoint_url`, `mlflow_tracking_uri`).
        """

        model: ModelSpec = copy.copy(PipelineSpec.model_fields["model"])

        storage_uri: str | None = Field(
            None,
            description="Artifact root: a local folder or s3://bucket/prefix. "
            "Unset: <state_dir>/artifacts.",
        )
        s3_endpoint_url: str | None = Field(
            None,
            description="S3-compatible endpoint (MinIO, ...) for an s3:// storage_uri and an "
            "s3:// source.path. Unset: AWS (or AWS_ENDPOINT_URL).",
        )
        mlflow_tracking_uri: str | None = Field(
            None,
            description="MLflow tracking and registry URI, e.g. http://mlflow:5000. "
            "Unset: a sqlite store under state_dir.",
        )

        @field_validator(*RESOURCE_ATTRIBUTES, mode="before")
        @classmethod
        def _blank_is_unset(cls, value: Any) -> Any:
            # "{{ env('X', '') }}" renders to "": treat it like an unset variable.
            return None if isinstance(value, str) and not value.strip() else value

        # -- Python API ---------------------------------------------------------------------------

        def to_spec(self, base_dir: str | Path | None = None) -> PipelineSpec:
            """The plain `PipelineSpec`; relative paths resolve against `base_dir` when given."""
            data = self.model_dump(mode="python", include=set(PipelineSpec.model_fields))
            if base_dir is not None:
                data = _resolve_relative_paths(data, Path(base_dir))
            return PipelineSpec.model_validate(data)

        def _storage(self, base_dir: Path) -> ArtifactStore | None:
            if self.storage_uri is None:
                return None
            from mlops_assets.resources import ArtifactStore

            uri = self.storage_uri
            if not _is_absolute(uri):
                uri = str((base_dir / uri).resolve())
            return ArtifactStore(base_uri=uri, s3_endpoint_url=self.s3_endpoint_url)

        def _s3(self) -> S3Resource | None:
            if self.s3_endpoint_url is None:
                return None
            from dagster_aws.s3 import S3Resource

            return S3Resource(endpoint_url=self.s3_endpoint_url)

        def _registry(self) -> MLflowRegistry | None:
            if self.mlflow_tracking_uri is None:
                return None
            from mlops_assets.resources import MLflowRegistry

            uri = self.mlflow_tracking_uri
            ui_url = uri if uri.startswith(("http://", "https://")) else None
            return MLflowRegistry(tracking_uri=uri, ui_url=ui_url)

        def build_translator(self) -> MLOpsTranslator | None:
            """Override in a Python subclass of the component to use your own translator."""
            return None

        def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
            from mlops_assets.definitions import build_mlops_defs

            base_dir = _component_dir(context)
            spec = self.to_spec(base_dir)
            return build_mlops_defs(
                spec, translator=self.build_translator(), storage=self._storage(base_dir),
                registry=self._registry(), s3=self._s3(),
            )


def _component_dir(context: dg.ComponentLoadContext) -> Path:
    path = Path(context.path)
    return (path if path.is_dir() else path.parent).resolve()
