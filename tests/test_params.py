"""params.yaml validation: every bad field reported at once, by path, before any work."""

from pathlib import Path

import pytest
import yaml

from cropseg.params import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_yaml_is_valid_and_matches_defaults():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.data.synthetic.patch_size == 366
    assert params.data.huggingface.repo_id == "paren8esis/S4A"
    assert params.dem.source == "synthetic"


def test_every_bad_field_is_listed_with_its_path():
    raw = {
        "data": {
            "sourc": "synthetic",  # unknown key
            "limit": 0,  # out of range
            "tiles": ["XX"],  # not an MGRS tile
            "synthetic": {"patch_size": 100, "patches": "eight", "label_noise": 1.5},
        },
        "dem": {"source": "srtm"},  # not an allowed choice
        "trian": {},  # unknown section
    }
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert "8 invalid field(s)" in message
    for path in ("data.sourc: unknown key", "data.limit:", "data.tiles:", "data.synthetic.patch_size:",
                 "data.synthetic.patches:", "data.synthetic.label_noise:", "dem.source:", "trian: unknown key"):
        assert path in message, path
    assert "multiple of 61" in message
    assert "'srtm'" in message


def test_wrong_types_are_not_coerced():
    with pytest.raises(ParamsError, match=r"data.synthetic.patches: .*integer"):
        parse_params({"data": {"synthetic": {"patches": "8"}}})
    with pytest.raises(ParamsError, match=r"data.years"):
        parse_params({"data": {"years": 2019}})


def test_local_source_needs_a_path():
    with pytest.raises(ParamsError, match="data.local.path is not set"):
        parse_params({"data": {"source": "local"}})


def test_load_params_reports_file_problems(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    broken.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(broken)
