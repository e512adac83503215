"""The code location `mlops-assets run` serves: the pipeline's own definitions, one setting changed.

`mlops-assets run` writes a two-line module that calls `pipeline_defs(...)` (see
`deployment.LOCATION_MODULE`); its code server and the daemon load that module. The
definitions are exactly `build_mlops_defs` of the spec (or the Component's, with its
resources), sensors and schedules STOPPED as the library declares them (`run` switches them
on through the instance for as long as it runs), with two deployment settings:

- the executor: in-process by default, so a run is one process (a multiprocess run starts one
  Python per step, 15-25 s each on a loaded two-core machine); `--executor multiprocess` keeps
  Dagster's default;
- optional spec overrides of deployment-only fields (e.g. `automation.sensor_interval_seconds`),
  which do not enter the spec hash, so no asset becomes stale.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from mlops_assets.spec import PipelineSpec

EXECUTORS = ("in_process", "multiprocess")
# Fields `run` may override: where and when things run, never what a model learns.
OVERRIDABLE = ("automation.sensor_interval_seconds", "automation.watchdog_interval_seconds",
               "automation.watchdog_grace_seconds")


def with_overrides(spec: PipelineSpec, overrides: dict[str, Any] | None) -> PipelineSpec:
    if not overrides:
        return spec
    data = spec.model_dump(mode="json")
    for dotted, value in overrides.items():
        if dotted not in OVERRIDABLE:
            raise ValueError(f"{dotted}: only {', '.join(OVERRIDABLE)} may be overridden by `mlops-assets run`")
        section, key = dotted.split(".")
        data[section][key] = value
    return PipelineSpec.from_dict(data)


def pipeline_defs(target: str, *, executor: str = "in_process", overrides: dict[str, Any] | None = None
                  ) -> dg.Definitions:
    """The definitions of the pipeline in `target` (a spec YAML or a defs.yaml) for `run`."""
    import warnings
    from dataclasses import replace

    from mlops_assets.cli.target import load_target

    # Dagster itself re-creates multi-job sensors with `owners=None` when it resolves their jobs,
    # which warns that `owners` is a beta parameter; nobody here passed it.
    warnings.filterwarnings("ignore", category=dg.BetaWarning, message="Parameter `owners` of initializer")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    loaded = load_target(target)
    loaded = replace(loaded, spec=with_overrides(loaded.spec, overrides))
    defs = loaded.build_defs()
    if executor == "in_process":
        defs = dg.Definitions.merge(defs, dg.Definitions(executor=dg.in_process_executor))
    return defs
