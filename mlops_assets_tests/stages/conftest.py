import dagster as dg
import pytest

from mlops_assets_tests.conftest import small_spec
from mlops_assets_tests.stages.harness import StageWorld


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def world(tmp_path, instance) -> StageWorld:
    # Stage tests check wiring, not model quality: a floor a 3k-row model always clears.
    base = small_spec(tmp_path)
    gate = {**base.gate.model_dump(mode="json"), "min_main_metric": 0.55, "max_fairness_gap": None}
    return StageWorld(tmp_path, instance, gate=gate)
