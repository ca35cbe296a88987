"""Label sets: the shipped YAML files, the lookup table, and the validation messages."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cropseg.split.labels import LabelSet, LabelSetError, available_label_sets, load_label_set
from cropseg.fetch.synthetic import CROPS

ROOT = Path(__file__).resolve().parents[1] / "configs" / "labels"


def test_shipped_sets_load():
    assert {"s4a11", "crop_presence", "eight"} <= set(available_label_sets(ROOT))
    s4a11 = load_label_set("s4a11", ROOT)
    assert s4a11.n_classes == 12 and s4a11.class_names[0] == "background"
    assert s4a11.class_names[1:4] == ("wheat", "maize", "sorghum")
    assert load_label_set("crop_presence", ROOT).class_names == ("background", "crop", "non_crop")
    eight = load_label_set("eight", ROOT)
    assert eight.n_classes == 9
    synthetic_codes = np.array([c.code for c in CROPS])
    assert (eight.map(synthetic_codes) > 0).all(), "eight must cover every synthetic code"


def test_map_numpy_and_torch():
    s = load_label_set("s4a11", ROOT)
    codes = np.array([[0, 110, 120, 999], [770, 910, 438, 100_000]], dtype=np.uint32)
    expected = np.array([[0, 1, 2, 0], [11, 0, 9, 0]])
    out = s.map(codes)
    assert out.dtype == np.uint8 and (out == expected).all()
    t = s.map(torch.from_numpy(codes.astype(np.int64)))
    assert t.dtype == torch.int64 and (t.numpy() == expected).all()
    assert s.map(np.array([-5, 110], dtype=np.int32)).tolist() == [0, 1]
    crop = load_label_set("crop_presence", ROOT)  # the thesis': grassland is a crop, 192 / 977 background
    assert crop.map(np.array([110, 330, 810, 910, 921, 975, 977, 192, 998, 0])).tolist() == [1, 1, 1, 1, 1, 2, 0, 0, 1, 0]


def test_dict_round_trip():
    s = load_label_set("eight", ROOT)
    back = LabelSet.from_dict(s.to_dict())
    assert back.class_names == s.class_names and back.codes == s.codes
    assert np.array_equal(back.lut, s.lut)


def _write(tmp_path, text, name="bad"):
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "text, message",
    [
        ("classes:\n  - {name: a, codes: [110]}\n  - {name: b, codes: [120, 110]}\n", "code 110 is also in class 'a'"),
        ("classes:\n  - {name: background, codes: [110]}\n", "implicit"),
        ("classes:\n  - {name: a}\n", "missing key(s) ['codes']"),
        ("classes:\n  - {codes: [1]}\n", "missing key(s) ['name']"),
        ("klasses: []\n", "missing top-level key 'classes'"),
        ("classes:\n  - {name: a, codes: [110], colour: red}\n", "unknown key(s) ['colour']"),
        ("classes:\n  - {name: a, codes: [0]}\n", "0 is background"),
        ("classes:\n  - {name: a, codes: ['100-199']}\n  - {name: b, codes: [150]}\n", "code 150 is also in class 'a'"),
    ],
)
def test_errors_name_file_and_entry(tmp_path, text, message):
    root = _write(tmp_path, text)
    with pytest.raises(LabelSetError) as err:
        load_label_set("bad", root)
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_set_lists_available(tmp_path):
    root = _write(tmp_path, "classes:\n  - {name: a, codes: [110]}\n", name="mine")
    with pytest.raises(LabelSetError, match=r"unknown label set 'nope'.*available.*mine"):
        load_label_set("nope", root)


#: The thesis' label-encoder format: {name, id}, id one code or a list, the first entry the background.
ENCODER = """\
labels:
  - {name: background, id: 0}
  - {name: wheat, id: 110}
  - {name: maize, id: [120]}
  - {name: sorghum, id: 140}
  - {name: barley, id: 150}
  - {name: rye, id: 160}
  - {name: oats, id: 170}
  - {name: grapes, id: 330}
  - {name: rapeseed, id: 435}
  - {name: sunflower, id: 438}
  - {name: potatoes, id: 510}
  - {name: peas, id: [770]}
"""


def test_label_encoder_format_loads_like_ours(tmp_path):
    thesis = load_label_set("thesis", _write(tmp_path, ENCODER, name="thesis"))
    ours = load_label_set("s4a11", ROOT)
    assert thesis.class_names == ours.class_names and thesis.codes == ours.codes
    assert np.array_equal(thesis.lut, ours.lut)
    grouped = load_label_set("grouped", _write(tmp_path, "labels:\n  - {name: other, id: [0, 999]}\n"
                                               "  - {name: cereals, id: [110, 150, '160-170']}\n"
                                               "  - {name: vines, id: 330}\n", name="grouped"))
    assert grouped.class_names == ("background", "cereals", "vines")
    assert grouped.map(np.array([0, 110, 165, 330, 999, 120])).tolist() == [0, 1, 1, 2, 0, 0]
    assert LabelSet.from_dict(grouped.to_dict()).codes == grouped.codes


@pytest.mark.parametrize(
    "text, message",
    [
        ("labels:\n  - {name: background, id: 0}\n  - {name: a, id: [110, 0]}\n", "labels[1]): code 0 outside 1..65535"),
        ("labels:\n  - {name: other, id: [0, 110]}\n  - {name: a, id: 110}\n",
         "code 110 is also in class 'background (labels[0])'"),
        ("labels:\n  - {name: background, id: 0}\n  - {name: a}\n", "labels[1]: missing key(s) ['id']"),
        ("labels:\n  - {name: background, id: 0}\n  - {name: a, id: 110}\n  - {name: Background, id: 120}\n",
         "'background' is labels[0]"),
        ("labels:\n  - {name: background}\n  - {name: a, id: 110}\n", "labels[0] (the background): expected a mapping"),
        ("labels:\n  - {name: background, id: 0}\n", "the background, then at least one class"),
        ("labels:\n  - {name: background, id: 0}\n  - {name: a, id: 110}\n  - {name: a, id: 120}\n",
         "class name listed twice"),
        ("labels:\n  - {name: background, id: 0}\n  - {name: a, id: 110, colour: red}\n", "unknown key(s) ['colour']"),
    ],
)
def test_label_encoder_errors_name_file_and_entry(tmp_path, text, message):
    root = _write(tmp_path, text)
    with pytest.raises(LabelSetError) as err:
        load_label_set("bad", root)
    assert message in str(err.value) and "bad.yaml" in str(err.value)
