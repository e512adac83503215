from pathlib import Path

from mlops_assets.spec_reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), "docs/configuration.md is stale: run `make docs`"


def test_reference_covers_every_section():
    text = render()
    for section in ("PipelineSpec", "FeatureSpec", "GateSpec", "DriftSpec", "AutomationSpec", "SearchSpec", "MLPSpec"):
        assert f"## {section}" in text
