import pytest

from mlops_assets.automation.rollback import RollbackError, choose_rollback_target
from mlops_assets.resources.registry import VersionInfo


def _v(version, approval, **tags):
    return VersionInfo("m", str(version), None, {"approval": approval, **tags}, [])


VERSIONS = [_v(1, "approved"), _v(2, "rejected"), _v(3, "forced"), _v(4, "approved", previous_champion="3")]


def test_default_target_is_previous_champion():
    assert choose_rollback_target(VERSIONS, VERSIONS[3], None).version == "3"


def test_falls_back_to_latest_older_approved_version():
    current = _v(4, "approved")
    assert choose_rollback_target(VERSIONS, current, None).version == "3"
    assert choose_rollback_target(VERSIONS[:2] + [_v(3, "approved")], _v(3, "approved"), None).version == "1"


def test_refuses_unapproved_missing_or_current_versions():
    with pytest.raises(RollbackError, match="never approved"):
        choose_rollback_target(VERSIONS, VERSIONS[3], "2")
    with pytest.raises(RollbackError, match="does not exist"):
        choose_rollback_target(VERSIONS, VERSIONS[3], "9")
    with pytest.raises(RollbackError, match="already the champion"):
        choose_rollback_target(VERSIONS, VERSIONS[3], "4")
    with pytest.raises(RollbackError, match="no approved version"):
        choose_rollback_target([_v(1, "approved")], _v(1, "approved"), None)
