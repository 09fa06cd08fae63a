"""Corrupt, truncated, unknown or too-new model files give one clear error naming the file."""

from __future__ import annotations

import copy

import pytest
from reference_data import FIXTURES

from polypot import DeepPot
from polypot.io.neutral import load_neutral, save_neutral
from polypot.model.errors import ModelFormatError

SOURCE = FIXTURES / "se_e2_a" / "model.dp"


@pytest.fixture(scope="module")
def data():
    return load_neutral(SOURCE)


def _write(tmp_path, data, name="m.dp"):
    path = tmp_path / name
    save_neutral(path, data)
    return path


def test_truncated_dp(tmp_path):
    raw = SOURCE.read_bytes()
    path = tmp_path / "cut.dp"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFormatError, match=r"cut\.dp"):
        DeepPot(path, backend="numpy")


def test_garbage_dp(tmp_path):
    path = tmp_path / "junk.dp"
    path.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(ModelFormatError, match=r"junk\.dp: not a readable \.dp"):
        DeepPot(path, backend="numpy")


def test_garbage_yaml(tmp_path):
    path = tmp_path / "junk.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ModelFormatError, match=r"junk\.yaml: not valid YAML"):
        DeepPot(path, backend="numpy")


def test_unknown_descriptor_class(tmp_path, data):
    bad = copy.deepcopy(data)
    bad["model"]["descriptor"]["type"] = "se_unheard_of"
    path = _write(tmp_path, bad)
    with pytest.raises(ModelFormatError, match=r"m\.dp.*unknown descriptor type 'se_unheard_of'"):
        DeepPot(path, backend="numpy")


def test_unknown_at_class(tmp_path, data):
    bad = copy.deepcopy(data)
    bad["model"]["fitting"]["nets"]["@class"] = "MysteryCollection"
    path = _write(tmp_path, bad)
    with pytest.raises(ModelFormatError, match=r"m\.dp.*'NetworkCollection'.*MysteryCollection"):
        DeepPot(path, backend="numpy")


def test_newer_version(tmp_path, data):
    bad = copy.deepcopy(data)
    bad["model"]["descriptor"]["@version"] = 99
    path = _write(tmp_path, bad)
    with pytest.raises(ModelFormatError, match=r"m\.dp.*'@version' 99 is newer"):
        DeepPot(path, backend="numpy")


def test_missing_model_entry(tmp_path, data):
    path = _write(tmp_path, {"backend": "x"})
    with pytest.raises(ModelFormatError, match=r"m\.dp: the file has no 'model' entry"):
        DeepPot(path, backend="numpy")


def test_missing_dataset(tmp_path):
    import h5py

    path = tmp_path / "holes.dp"
    path.write_bytes(SOURCE.read_bytes())
    with h5py.File(path, "a") as f:
        del f["variable_0003"]
    with pytest.raises(ModelFormatError, match=r"holes\.dp: dataset /variable_0003 is missing"):
        DeepPot(path, backend="numpy")


def test_unknown_descriptor_in_input():
    from polypot.model import build_model

    with pytest.raises(ModelFormatError, match="unknown descriptor type 'se_nope'"):
        build_model({"type_map": ["O"], "descriptor": {"type": "se_nope"}})
