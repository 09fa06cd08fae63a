"""Errors of a model on labelled systems, like DeePMD-kit's ``dp test``.

:func:`test_model` evaluates a model on the first frames of each system and compares with the
labels. For every system it gives (when the labels exist)

* energy MAE / RMSE (eV) over frames, and per atom (the same divided by the number of atoms);
* force MAE / RMSE (eV/Å) over all force components;
* virial MAE / RMSE (eV) over all 9 components, and per atom (periodic systems only);
* atomic energy MAE / RMSE (eV) when the system has ``atom_ener`` labels;

followed by their weighted average over the systems (see :func:`weighted_average`).

With ``detail_file`` it writes DeePMD-kit's detail files (``.e.out``, ``.e_peratom.out``,
``.f.out``, ``.v.out``, ``.v_peratom.out``), one block per system, and a parity plot
``.parity.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.system import System, load_systems

#: frames evaluated together: bounds the memory of the neighbour lists and gradients
CHUNK_FRAMES = 8

#: metric name -> (unit, name of the size the weighted average uses)
METRICS: dict[str, tuple[str, str]] = {
    "energy_mae": ("eV", "energy"),
    "energy_rmse": ("eV", "energy"),
    "energy_mae_per_atom": ("eV", "energy"),
    "energy_rmse_per_atom": ("eV", "energy"),
    "force_mae": ("eV/A", "force"),
    "force_rmse": ("eV/A", "force"),
    "virial_mae": ("eV", "virial"),
    "virial_rmse": ("eV", "virial"),
    "virial_mae_per_atom": ("eV", "virial"),
    "virial_rmse_per_atom": ("eV", "virial"),
    "atom_ener_mae": ("eV", "atom_ener"),
    "atom_ener_rmse": ("eV", "atom_ener"),
}

#: most force components drawn in the parity plot (a random subset beyond that)
_PLOT_MAX_POINTS = 200_000

_VIRIAL_NAMES = ("xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz")


def _mae(diff: np.ndarray) -> float:
    return float(np.mean(np.abs(diff)))


def _rmse(diff: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(diff))))


def _load_model(model: Any, backend: str | None) -> Any:
    if isinstance(model, str | os.PathLike):
        from .deep_pot import DeepPot

        return DeepPot(model, backend=backend)
    if backend is not None and getattr(model, "backend_name", backend) != backend:
        raise ValueError(
            f"test_model: backend={backend!r} was given with a DeepPot already loaded on "
            f"{model.backend_name!r}; pass the model file instead"
        )
    return model


def _has_forces(dp: Any) -> bool:
    """Whether ``dp`` can give forces (a neutral file on NumPy gives energies only)."""
    return bool(getattr(dp, "_has_forces", getattr(dp, "backend_name", "") != "numpy"))


def predict(dp: Any, system: System, nframes: int, atomic: bool = False,
            chunk: int = CHUNK_FRAMES) -> dict[str, np.ndarray]:
    """The model's energy (nf,), force (nf, natoms, 3), virial (nf, 9) [, atom_energy
    (nf, natoms)] on the first ``nframes`` frames of ``system``, ``chunk`` frames at a time.
    Without forces (NumPy backend) only energy [and atom_energy] are returned."""
    forces = _has_forces(dp)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, nframes, max(int(chunk), 1)):
        stop = min(start + max(int(chunk), 1), nframes)
        coord = system.coord[start:stop]
        box = None if system.box is None else system.box[start:stop]
        if forces:
            res = dp.eval(coord, box, system.atype, atomic=atomic)
            out = {"energy": res[0], "force": res[1], "virial": res[2]}
            if atomic:
                out["atom_energy"] = res[3]
        else:
            energy, atom_energy = dp.eval_energy(coord, box, system.atype)
            out = {"energy": energy}
            if atomic:
                out["atom_energy"] = atom_energy
        for key, value in out.items():
            parts.setdefault(key, []).append(np.asarray(value, dtype=np.float64))
    natoms = system.natoms
    shapes = {"energy": (nframes,), "force": (nframes, natoms, 3), "virial": (nframes, 9),
              "atom_energy": (nframes, natoms)}
    return {k: np.concatenate(v).reshape(shapes[k]) for k, v in parts.items()}


def _system_errors(system: System, pred: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """Errors of one system and the sizes used to weight them."""
    natoms = system.natoms
    res: dict[str, Any] = {"system": system.path, "nframes": n, "natoms": natoms}
    sizes: dict[str, int] = {}
    # (label, prediction, also per atom, weight: frames or values)
    terms = [("energy", "energy", True, "frames"), ("force", "force", False, "values"),
             ("atom_ener", "atom_energy", False, "values")]
    if system.box is not None:
        terms.insert(2, ("virial", "virial", True, "frames"))
    for label, key, per_atom, weight in terms:
        ref = getattr(system, label)
        if ref is None or key not in pred:
            continue
        diff = pred[key] - ref[:n]
        res[f"{label}_mae"], res[f"{label}_rmse"] = _mae(diff), _rmse(diff)
        if per_atom:
            res[f"{label}_mae_per_atom"] = res[f"{label}_mae"] / natoms
            res[f"{label}_rmse_per_atom"] = res[f"{label}_rmse"] / natoms
        sizes[label] = n if weight == "frames" else int(diff.size)
    res["sizes"] = sizes
    return res


def weighted_average(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average of per-system errors: MAEs weighted by the number of values each system
    contributed (frames for energies and virials, components for forces), RMSEs as the root of
    the weighted mean square. A metric is averaged over the systems that have it."""
    avg: dict[str, Any] = {
        "system": "weighted average",
        "nsystems": len(results),
        "nframes": int(sum(r["nframes"] for r in results)),
    }
    sizes: dict[str, int] = {}
    for name, (_, size_key) in METRICS.items():
        have = [r for r in results if name in r]
        if not have:
            continue
        weights = np.array([r["sizes"][size_key] for r in have], dtype=np.float64)
        values = np.array([r[name] for r in have], dtype=np.float64)
        if weights.sum() == 0:
            continue
        if "rmse" in name:
            avg[name] = float(np.sqrt(np.sum(weights * values**2) / weights.sum()))
        else:
            avg[name] = float(np.sum(weights * values) / weights.sum())
        sizes[size_key] = int(weights.sum())
    avg["sizes"] = sizes
    return avg


def _savetxt(path: str, columns: np.ndarray, header: str, append: bool) -> None:
    with open(path, "ab" if append else "wb") as fh:
        np.savetxt(fh, columns, header=header)


def _write_detail(detail: str, system: System, pred: dict[str, np.ndarray], n: int,
                  append: bool) -> None:
    """Append (or start, for the first system) DeePMD-kit's detail files for one system."""
    name, natoms = system.path, system.natoms
    if system.energy is not None:
        cols = np.column_stack([system.energy[:n], pred["energy"]])
        _savetxt(f"{detail}.e.out", cols, f"{name}: data_e pred_e", append)
        _savetxt(f"{detail}.e_peratom.out", cols / natoms, f"{name}: data_e pred_e", append)
    if system.force is not None and "force" in pred:
        cols = np.column_stack([system.force[:n].reshape(-1, 3), pred["force"].reshape(-1, 3)])
        _savetxt(f"{detail}.f.out", cols,
                 f"{name}: data_fx data_fy data_fz pred_fx pred_fy pred_fz", append)
    if system.virial is not None and system.box is not None and "virial" in pred:
        cols = np.column_stack([system.virial[:n], pred["virial"]])
        header = name + ": " + " ".join(
            [f"data_v{c}" for c in _VIRIAL_NAMES] + [f"pred_v{c}" for c in _VIRIAL_NAMES]
        )
        _savetxt(f"{detail}.v.out", cols, header, append)
        _savetxt(f"{detail}.v_peratom.out", cols / natoms, header, append)
    if "atom_energy" in pred:
        pae = pred["atom_energy"].reshape(-1, 1)
        if system.atom_ener is not None:
            cols = np.column_stack([system.atom_ener[:n].reshape(-1, 1), pae])
            header = f"{name}: data_ae pred_ae"
        else:
            cols, header = pae, f"{name}: pred_ae"
        _savetxt(f"{detail}.ae.out", cols, header, append)


def parity_plot(path: str, energy: tuple[np.ndarray, np.ndarray] | None,
                force: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Predicted against reference values with the y = x line: energy per atom (eV/atom) and
    force components (eV/Å), one panel each, RMSE in the titles. ``energy`` and ``force`` are
    (data, prediction) pairs of flat arrays, or None to leave the panel out."""
    # a bare Figure renders through Agg without touching pyplot's global backend
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [
        (title, unit, data, pred)
        for title, unit, pair in (("Energy per atom", "eV/atom", energy),
                                  ("Force components", "eV/Å", force))
        if pair is not None and pair[0].size
        for data, pred in [pair]
    ]
    if not panels:
        return
    fig = Figure(figsize=(5.0 * len(panels), 4.6), layout="constrained")
    for k, (title, unit, data, pred) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        rmse = _rmse(pred - data)
        ax.scatter(data, pred, s=12 if data.size < 1000 else 3, alpha=0.6, linewidths=0)
        lo = float(min(data.min(), pred.min()))
        hi = float(max(data.max(), pred.max()))
        pad = 0.02 * (hi - lo) or 1e-3 * max(abs(lo), 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="y = x")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(5))
            axis.get_major_formatter().set_useOffset(False)
        ax.set_xlabel(f"DFT ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(f"{title}: RMSE {rmse:.3e} {unit}")
        ax.legend(loc="upper left")
    fig.savefig(path, dpi=120)


def test_model(
    model: Any,
    systems: Any,
    numb_test: int | None = None,
    atomic: bool = False,
    detail_file: str | os.PathLike | None = None,
    backend: str | None = None,
    chunk: int = CHUNK_FRAMES,
) -> list[dict[str, Any]]:
    """Errors of ``model`` on ``systems``, like ``dp test``.

    model: a model file (any suffix :class:`~polypot.infer.deep_pot.DeepPot` reads) or a
        loaded ``DeepPot``.
    systems: a list of :class:`~polypot.data.system.System`, or what
        :func:`~polypot.data.system.load_systems` accepts (a folder, an HDF5 file, a list);
        their types are mapped onto the model's type map by name.
    numb_test: frames tested per system (the first ones); 0 or None: all frames.
    atomic: also evaluate atomic energies (their errors need ``atom_ener`` labels; with
        ``detail_file`` they are written to ``{detail_file}.ae.out``). Atomic energy errors
        are computed whenever a system has ``atom_ener`` labels.
    detail_file: prefix of DeePMD-kit's detail files and of ``{detail_file}.parity.png``.
    backend: backend for ``.dp`` / ``.yaml`` files (default: the first installed autodiff one;
        ``"numpy"`` gives energies only).

    Returns one dict per system, then their weighted average (the last entry, whose
    ``"system"`` is ``"weighted average"``). A system dict holds ``system``, ``nframes``,
    ``natoms``, the metrics of :data:`METRICS` that its labels allow and ``sizes`` (how many
    values each kind of error averaged over).
    """
    if numb_test is not None and int(numb_test) < 0:
        raise ValueError(f"numb_test must be >= 0 (0 or None: all frames), got {numb_test}")
    dp = _load_model(model, backend)
    if isinstance(systems, System):
        systems = [systems]
    elif not (isinstance(systems, Sequence) and systems
              and all(isinstance(s, System) for s in systems)):
        systems = load_systems(systems, dp.get_type_map())
    detail = None if detail_file is None else os.fspath(detail_file)
    if detail is not None and os.path.dirname(detail):
        os.makedirs(os.path.dirname(detail), exist_ok=True)
    want_atomic = atomic or any(s.atom_ener is not None for s in systems)
    results: list[dict[str, Any]] = []
    plot_e: list[tuple[np.ndarray, np.ndarray]] = []
    plot_f: list[tuple[np.ndarray, np.ndarray]] = []
    for k, system in enumerate(systems):
        n = system.nframes if not numb_test else min(int(numb_test), system.nframes)
        pred = predict(dp, system, n, atomic=want_atomic, chunk=chunk)
        results.append(_system_errors(system, pred, n))
        if detail is not None:
            _write_detail(detail, system, pred, n, append=k > 0)
            if system.energy is not None:
                plot_e.append((system.energy[:n] / system.natoms,
                               pred["energy"] / system.natoms))
            if system.force is not None and "force" in pred:
                plot_f.append((system.force[:n].ravel(), pred["force"].ravel()))
    results.append(weighted_average(results))
    if detail is not None:
        energy = _join(plot_e)
        force = _join(plot_f)
        if force is not None and force[0].size > _PLOT_MAX_POINTS:
            keep = np.random.default_rng(0).choice(force[0].size, _PLOT_MAX_POINTS,
                                                   replace=False)
            force = (force[0][keep], force[1][keep])
        parity_plot(f"{detail}.parity.png", energy, force)
    return results


def _join(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    if not pairs:
        return None
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


#: an alias that test collectors do not mistake for a test
evaluate_model = test_model
test_model.__test__ = False  # type: ignore[attr-defined]


def format_errors(res: dict[str, Any]) -> list[str]:
    """``dp test``'s lines for one result of :func:`test_model` (a system or the average)."""
    lines = []
    labels = {
        "energy_mae": "Energy MAE", "energy_rmse": "Energy RMSE",
        "energy_mae_per_atom": "Energy MAE/Natoms", "energy_rmse_per_atom": "Energy RMSE/Natoms",
        "force_mae": "Force  MAE", "force_rmse": "Force  RMSE",
        "virial_mae": "Virial MAE", "virial_rmse": "Virial RMSE",
        "virial_mae_per_atom": "Virial MAE/Natoms", "virial_rmse_per_atom": "Virial RMSE/Natoms",
        "atom_ener_mae": "Atomic ener MAE", "atom_ener_rmse": "Atomic ener RMSE",
    }
    for name, (unit, _) in METRICS.items():
        if name in res:
            lines.append(f"{labels[name]:<19}: {res[name]:e} {unit}")
    return lines
