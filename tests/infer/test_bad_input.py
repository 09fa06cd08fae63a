"""Bad input gets one clear error naming what was wrong."""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import FIXTURES

from polypot import DeepPot


@pytest.fixture(scope="module")
def dp():
    return DeepPot(FIXTURES / "se_e2_a" / "model.dp", backend="numpy")


COORD = np.random.default_rng(0).uniform(0, 10, (1, 6, 3))
CELL = np.eye(3)[None] * 10
ATYPE = np.array([0, 1, 1, 0, 1, 1])


def test_wrong_coord_shape(dp):
    with pytest.raises(ValueError, match=r"coords has shape \(1, 5, 3\).*6 atom"):
        dp.eval_energy(COORD[:, :5], CELL, ATYPE)


def test_flat_coords_accepted(dp):
    e1, _ = dp.eval_energy(COORD.reshape(1, -1), CELL.reshape(1, 9), ATYPE)
    e2, _ = dp.eval_energy(COORD, CELL, ATYPE)
    np.testing.assert_array_equal(e1, e2)


def test_wrong_cell_shape(dp):
    with pytest.raises(ValueError, match=r"cells has shape \(1, 2, 3\)"):
        dp.eval_energy(COORD, np.ones((1, 2, 3)), ATYPE)


def test_type_outside_type_map(dp):
    with pytest.raises(ValueError, match=r"type 2.*type_map \['O', 'H'\]"):
        dp.eval_energy(COORD, CELL, np.array([0, 1, 2, 0, 1, 1]))


def test_negative_type(dp):
    with pytest.raises(ValueError, match=r"type -1"):
        dp.eval_energy(COORD, CELL, np.array([0, 1, -1, 0, 1, 1]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_coordinates(dp, bad):
    coord = COORD.copy()
    coord[0, 3, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        dp.eval_energy(coord, CELL, ATYPE)


def test_zero_volume_cell(dp):
    cell = np.array([[[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]]])
    with pytest.raises(ValueError, match="zero volume"):
        dp.eval_energy(COORD, cell, ATYPE)


def test_float_types_rejected(dp):
    with pytest.raises(ValueError, match="atom_types must be integers"):
        dp.eval_energy(COORD, CELL, ATYPE.astype(float))


def test_unknown_suffix(tmp_path):
    path = tmp_path / "model.xyz"
    path.write_text("")
    with pytest.raises(ValueError, match=r"unknown model file suffix '\.xyz'"):
        DeepPot(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DeepPot(tmp_path / "nothing.dp")
