"""Model deviation: DeePMD-kit's definitions (checked against an explicit loop), file format,
steps, and clear errors for missing models and differing type maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from devi_models import CONFIG, HEADER, make_models

from polypot.backend.registry import default_autodiff_backend
from polypot.data.water_box import water_box
from polypot.infer.deep_pot import DeepPot
from polypot.infer.model_devi import (
    ModelDeviWriter,
    deviation,
    load_models,
    model_devi,
    write_model_devi_out,
)

pytestmark = pytest.mark.skipif(default_autodiff_backend() is None,
                                reason="forces need an autodiff backend")



def frames(nf: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nf perturbed copies of a 16-molecule water box: coords (nf, 48, 3), cells, types."""
    coord, cell, atype = water_box(16, seed=3)
    rng = np.random.default_rng(7)
    coords = coord[None] + rng.normal(0.0, 0.05, (nf, *coord.shape))
    return coords, np.repeat(cell[None], nf, axis=0), atype


def reference_devi(energies: np.ndarray, forces: np.ndarray, virials: np.ndarray
                   ) -> np.ndarray:
    """DeePMD-kit's columns by explicit loops: (nf, 7) from (nm, nf, 1), (nm, nf, n, 3),
    (nm, nf, 9) raw model outputs."""
    nm, nf, natoms = forces.shape[:3]
    out = np.zeros((nf, 7))
    for k in range(nf):
        def std(values: list[float]) -> float:
            mean = sum(values) / nm
            return float(np.sqrt(sum((x - mean) ** 2 for x in values) / nm))

        vdev = [std([virials[m, k, c] / natoms for m in range(nm)]) for c in range(9)]
        fdev = [np.sqrt(sum(std([forces[m, k, i, c] for m in range(nm)]) ** 2
                            for c in range(3))) for i in range(natoms)]
        out[k, 0], out[k, 1] = max(vdev), min(vdev)
        out[k, 2] = np.sqrt(sum(x * x for x in vdev)) / 3
        out[k, 3], out[k, 4], out[k, 5] = max(fdev), min(fdev), sum(fdev) / natoms
        out[k, 6] = std([energies[m, k, 0] / natoms for m in range(nm)])
    return out


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_models(tmp_path_factory.mktemp("models"))


def test_deviation_matches_explicit_loop() -> None:
    rng = np.random.default_rng(0)
    e, f, v = rng.normal(size=(4, 2, 1)), rng.normal(size=(4, 2, 5, 3)), rng.normal(size=(4, 2, 9))
    np.testing.assert_allclose(deviation(f, v, e), reference_devi(e, f, v), rtol=1e-12)
    assert deviation(f, v).shape == (2, 6)
    np.testing.assert_allclose(deviation(f, v), reference_devi(e, f, v)[:, :6], rtol=1e-12)


def test_model_devi_on_models(model_paths: list[Path]) -> None:
    models = load_models(model_paths)
    coords, cells, atype = frames()
    outs = [DeepPot(p).eval(coords, cells, atype) for p in model_paths]
    e, f, v = (np.stack([o[i] for o in outs]) for i in range(3))
    expected = reference_devi(e, f, v)
    got = model_devi(models, coords, cells, atype, frequency=5, batch_size=2)
    np.testing.assert_array_equal(got[:, 0], [0, 5, 10])
    np.testing.assert_allclose(got[:, 1:], expected, rtol=1e-10, atol=1e-14)
    assert (got[:, 4] > 0).all() and (got[:, 7] > 0).all()


def test_file_format(tmp_path: Path) -> None:
    rows = np.array([[1.5, 2.5e-3, 3.0, 4.0, 5.0, 6.0, 7.25e-7]])
    path = tmp_path / "model_devi.out"
    with ModelDeviWriter(path) as writer:
        writer.write([0], rows)
        assert path.read_text().count("\n") == 3  # flushed before close
        writer.write([100], rows * 2)
    lines = path.read_text().splitlines()
    assert lines[0] == "# "
    assert lines[1] == HEADER
    assert lines[2] == ("           0" + "       1.500000e+00       2.500000e-03       3.000000e+00"
                        "       4.000000e+00       5.000000e+00       6.000000e+00"
                        "       7.250000e-07")
    assert lines[3].startswith("         100       3.000000e+00")
    assert [len(x) for x in lines[2:]] == [12 + 7 * 19] * 2
    np.testing.assert_allclose(np.loadtxt(path), [[0, *rows[0]], [100, *(rows[0] * 2)]])
    # appending adds rows without a second header; write_model_devi_out writes one per call
    with ModelDeviWriter(path, append=True) as writer:
        writer.write([200], rows)
    assert path.read_text().count("#") == 2
    write_model_devi_out(np.array([[300, *rows[0]]]), path, title="sys", append=True)
    assert path.read_text().splitlines()[-3:-1] == ["# sys", HEADER]
    with ModelDeviWriter(tmp_path / "lammps_style.out", title=None) as writer:
        writer.write([0], rows[:, :6])
    lines = (tmp_path / "lammps_style.out").read_text().splitlines()
    assert lines[0] == HEADER[:-len("             devi_e")] and len(lines) == 2
    assert len(lines[1]) == 12 + 6 * 19


def test_missing_model_file(tmp_path: Path, model_paths: list[Path]) -> None:
    missing = tmp_path / "graph.404.dp"
    with pytest.raises(FileNotFoundError, match="graph.404.dp"):
        load_models([model_paths[0], missing])


def test_type_maps_differ(tmp_path: Path, model_paths: list[Path]) -> None:
    other = make_models(tmp_path, 1, {**CONFIG, "type_map": ["H", "O"]})[0]
    with pytest.raises(ValueError, match="do not share a type map"):
        load_models([model_paths[0], other])
    with pytest.raises(ValueError, match="at least two models"):
        load_models(model_paths[:1])
