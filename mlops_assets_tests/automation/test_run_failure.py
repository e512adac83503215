"""The run-failure sensor alerts through the pipeline's notifier, secret kept out of the logs."""

import logging

import dagster as dg

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.pipeline import Pipeline
from mlops_assets_tests.conftest import WEBHOOK_SECRET as SECRET


def test_secret_comes_from_env_var_and_stays_out_of_logs(webhook, monkeypatch, caplog, spec):
    monkeypatch.setenv("MLOPS_WEBHOOK_URL", webhook["url"])
    defs = build_mlops_defs(spec)
    names = Pipeline(spec)
    notifier = defs.resources[names.notifier_key]
    assert notifier.backend == "webhook"
    sensor = defs.resolve_sensor_def(names.sensor("run_failure"))
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        @dg.op
        def boom():
            raise RuntimeError("model server exploded")

        job = dg.GraphDefinition(name="g", node_defs=[boom]).to_job(name=names.job("retrain"))
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=failure, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
        ).for_run_failure()
        sensor(context)
    kinds = [b["kind"] for _, b in webhook["bodies"]]
    assert kinds == ["run_failure"]
    assert webhook["bodies"][0][1]["fields"]["run_id"] == result.run_id
    assert SECRET not in caplog.text
