"""Alerts on any failed run of the pipeline's jobs."""

import dagster as dg

from mlops_assets.automation.jobs import PipelineJobs
from mlops_assets.pipeline import Pipeline


def build_run_failure_sensor(pipeline: Pipeline, jobs: PipelineJobs, notifier,
                             extra_jobs: list | None = None) -> dg.SensorDefinition:
    """Run-failure sensors take no namespaced resource keys, so the pipeline's notifier is
    bound here and its config (EnvVar secrets included) resolved when an alert is sent."""

    @dg.run_failure_sensor(
        name=pipeline.sensor("run_failure"),
        monitored_jobs=[*jobs.all(), *(extra_jobs or [])],
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Alert on any failed run of this pipeline's jobs.",
    )
    def run_failure_sensor(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        error = context.failure_event.message or "run failed"
        notifier.process_config_and_initialize().send(
            "run_failure", f"{pipeline.name}: run of {run.job_name} failed", error[:1500],
            {"run_id": run.run_id, "partition": run.tags.get("dagster/partition", "")},
        )

    return run_failure_sensor
