"""params.yaml validation: every bad field reported at once, by path, before any work."""

from pathlib import Path

import pytest
import yaml

from cropseg.core.params import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_yaml_is_valid_and_matches_defaults():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.data.synthetic.patch_size == 366
    assert params.data.huggingface.repo_id == "paren8esis/S4A"
    assert params.dem.source == "synthetic"


def test_fp16_precision_and_machine_chosen_workers_are_accepted():
    params = load_params(REPO / "params.yaml")
    assert params.loader.workers is None  # chosen from the machine (cropseg.nn.precision.loader_workers)
    chosen = parse_params({"train": {"precision": "fp16"}, "holdout": {"precision": 32}, "loader": {"workers": 4}})
    assert (chosen.train.precision, chosen.holdout.precision, chosen.loader.workers) == ("fp16", "32", 4)
    with pytest.raises(ParamsError, match="train.precision"):
        parse_params({"train": {"precision": "fp8"}})
    with pytest.raises(ParamsError, match="loader.workers"):
        parse_params({"loader": {"workers": -1}})


def test_every_bad_field_is_listed_with_its_path():
    raw = {
        "data": {
            "sourc": "synthetic",  # unknown key
            "limit": 0,  # out of range
            "tiles": ["XX"],  # not an MGRS tile
            "synthetic": {"patch_size": 100, "patches": "eight", "mislabelled": 1.5},
        },
        "dem": {"source": "srtm"},  # not an allowed choice
        "trian": {},  # unknown section
    }
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert "8 invalid field(s)" in message
    for path in ("data.sourc: unknown key", "data.limit:", "data.tiles:", "data.synthetic.patch_size:",
                 "data.synthetic.patches:", "data.synthetic.mislabelled:", "dem.source:", "trian: unknown key"):
        assert path in message, path
    assert "multiple of 61" in message
    assert "'srtm'" in message


@pytest.mark.parametrize("old, new", [("label_noise", "mislabelled"), ("label_noise_unit", "mislabelled_unit")])
def test_the_generator_noise_keys_were_renamed(tmp_path, old, new):
    # data.synthetic.label_noise read like protocol.label_noise, another knob: the old key names the new one
    text = (REPO / "params.yaml").read_text()
    assert f"\n    {new}:" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(f"\n    {new}:", f"\n    {old}:"))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert f"data.synthetic.{old} was renamed to data.synthetic.{new}" in str(caught.value)
    assert "1 invalid field(s)" in str(caught.value)


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


def test_loading_params_imports_neither_torch_nor_the_training_code():
    # a fresh interpreter: params -> selection -> dataset -> medians -> params was a cycle pulling torch
    # into every stage, fetch_s4a included
    import subprocess
    import sys

    code = ("import sys; from cropseg.core.params import load_params; p = load_params('params.yaml'); "
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m in ('cropseg.selection.selector', "
            "'cropseg.nn.dataset', 'cropseg.medians.stage')); print(p.selection.method, heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [load_params(REPO / "params.yaml").selection.method, "[]"]


def test_a_bad_selection_method_is_still_rejected_before_training():
    # the schema checks the type only (params.py imports nothing of selection, so no stage that never
    # selects depends on the grammar); stages/train.py runs check_method right after loading params
    from cropseg.selection.method import check_method

    params = parse_params({"selection": {"method": "los"}})
    with pytest.raises(ParamsError, match=r"selection\.method.*unknown score 'los'"):
        check_method(params.selection.method)
    with pytest.raises(ParamsError, match=r"selection\.method"):
        parse_params({"selection": {"method": 3}})  # not a string: the schema's own error


def test_the_training_stage_refuses_a_bad_selection_method_before_any_work(tmp_path):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("selection:\n  method: los\ntracking:\n  wandb: disabled\n")
    for stage in ("holdout", "train"):  # no medians nor split: any work would fail on those first
        done = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), stage, "--params",
                               str(tmp_path / "params.yaml"), "--medians", str(tmp_path / "medians"),
                               "--split", str(tmp_path / "split"), "--model", str(tmp_path / "model.pt"),
                               "--metrics", str(tmp_path / "metrics"), "--checkpoints", str(tmp_path / "ck")],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"{stage}: error: {tmp_path / 'params.yaml'}: 1 invalid field(s):")
        assert "selection.method: selection.method 'los': unknown score 'los'" in done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.parametrize("data, message", [
    ({"tiles": ["31TCK"]}, "data.tiles: 31TCK is not an S4A tile (S4A has Catalonia (ES) 2019, 2020: "
                           "31TBF 31TCF 31TCG 31TDF 31TDG; France (FR) 2019: 31TCJ 31TCL 31TDK 31TDM 31UCP 31UDR)"),
    ({"tiles": ["31TCJ"], "years": [2020]}, "data.tiles: 31TCJ has no 2020 patches in S4A (France: 2019 only)"),
    ({"tiles": "all", "years": [2018]}, "data.years: 2018 has no patches in S4A (S4A has patches of 2019, 2020 only)"),
    ({"source": "huggingface", "tiles": ["31TBG", "31TCG"]}, "data.tiles: 31TBG is not an S4A tile"),
    ({"tiles": "some"}, "data.tiles: expected a list of MGRS tile names like '31TCG', or 'all', got 'some'"),
])
def test_tiles_must_be_real_s4a_tile_years(data, message):
    with pytest.raises(ParamsError) as caught:
        parse_params({"data": data})
    assert message in str(caught.value) and "1 invalid field(s)" in str(caught.value)


def test_tiles_all_and_pairs_s4a_lacks():
    # all and null: no tile list (every S4A tile of the years for synthetic, no filter otherwise)
    for value in ("all", None):
        data = parse_params({"data": {"tiles": value}}).data
        assert data.tiles is None and data.wants_tile("31UDR") and data.wants_tile("32ABC")
    # some pairs S4A lacks are fine (skipped by the generator): 31TCJ 2019 and 31TCG 2019, 2020
    assert parse_params({"data": {"tiles": ["31TCG", "31TCJ"]}}).data.tiles == ["31TCG", "31TCJ"]
    # huggingface checks tiles only (the hub listing decides about years); local takes any tile
    assert parse_params({"data": {"source": "huggingface", "tiles": ["31TCJ"], "years": [2020]}}).data.years == [2020]
    local = parse_params({"data": {"source": "local", "local": {"path": "x"}, "tiles": ["32UPU"], "years": [2021]}})
    assert local.data.tiles == ["32UPU"] and not local.data.wants_tile("31TCG")


def test_default_data_is_real_s4a_tile_years():
    data = load_params(REPO / "params.yaml").data
    assert data.tiles == ["31TCF", "31TCG", "31TDF", "31TDG"] and data.years == [2019, 2020]
    assert data.synthetic.patches == 12
