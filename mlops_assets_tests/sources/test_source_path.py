"""`source.path` is checked when the definitions load, with errors naming the field."""

import os

import pytest

from mlops_assets.definitions import build_mlops_defs
from mlops_assets.spec import PipelineSpec, SpecError
from mlops_assets_tests.conftest import small_spec


def _spec(tmp_path, path):
    data = small_spec(tmp_path).model_dump(mode="json")
    data["source"]["path"] = str(path)
    return PipelineSpec.from_dict(data)


def test_a_path_that_is_a_file_fails_the_definitions(tmp_path):
    afile = tmp_path / "landing"
    afile.write_text("not a folder")
    with pytest.raises(SpecError, match=f"source.path: {afile} is not a folder; it must name the landing folder"):
        build_mlops_defs(_spec(tmp_path, afile))


def test_a_link_to_a_missing_folder_fails_the_definitions(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "landing")
    with pytest.raises(SpecError, match="source.path: .* is a link to a missing folder"):
        build_mlops_defs(_spec(tmp_path, tmp_path / "landing"))


def test_a_missing_folder_is_created(tmp_path):
    landing = tmp_path / "new" / "landing"
    build_mlops_defs(_spec(tmp_path, landing))
    assert landing.is_dir()


def test_a_folder_that_cannot_be_created_names_the_field(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a parent folder should be")
    with pytest.raises(SpecError, match="source.path: the landing folder .* does not exist and cannot be created"):
        build_mlops_defs(_spec(tmp_path, blocker / "landing"))


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "s3://a/x", "s3://-bucket/x", "s3://buck et/x", "gs://bucket/x"])
def test_bad_uris_fail_the_definitions(tmp_path, uri):
    with pytest.raises(SpecError, match="source.path: "):
        build_mlops_defs(_spec(tmp_path, uri))


def test_a_valid_s3_uri_is_accepted_without_network(tmp_path):
    assert build_mlops_defs(_spec(tmp_path, "s3://my-bucket/landing/demo"))
