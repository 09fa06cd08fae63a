"""Prove that model files written by polypot load and evaluate in DeePMD-kit 3.x.

Two modes, each run with its own interpreter (DeePMD-kit never goes into polypot's venv):

1. ``--write`` (polypot's venv): read every supported DeePMD-kit 3.2 fixture with polypot and save
   it again with polypot's writer, as ``OUTDIR/<fixture>.dp`` (or ``.yaml`` with ``--suffix``)::

       /work/main/.venv/bin/python tools/deepmd_compat.py --write /tmp/compat

2. ``--check`` (a venv holding ``deepmd-kit==3.2.*``, plus torch for forces): evaluate each file
   with DeePMD-kit on the fixture frames and compare with the fixture's ``reference.npz``::

       /tmp/dpvenv/bin/python tools/deepmd_compat.py --check /tmp/compat/*.dp

   A file's fixture is its stem (``se_e2_a.dp``) or, failing that, its folder's name (so the
   original fixtures can be checked too, as a control). Two DeePMD-kit backends are used:

   * ``dp``: ``deepmd.infer.DeepPot`` on the file itself (NumPy backend; DeePMD-kit 3.2 gives
     energy and atomic energy there, its force/virial are NaN and reported as n/a);
   * ``pt``: ``dp convert-backend FILE x.pth`` (done in-process), then ``DeepPot`` on the
     ``.pth`` (PyTorch backend: energy, force, virial, atomic energy and atomic virial).

   For each file, backend and quantity it prints the largest relative error, frame by frame
   (``max |got - ref| / max |ref|``), against ``reference.npz`` ("reference") and against
   DeePMD-kit's own ``model.dp`` of that fixture evaluated the same way ("original"; turn off
   with ``--no-control``; it separates a file problem from DeePMD-kit/torch version drift).
   The one ill-conditioned reference frame (``ILL_CONDITIONED``) is reported on its own line
   with its own tolerance. Exit status 1 when an error is above ``--tol`` (1e-10) or
   DeePMD-kit rejects a file.

Setting up the DeePMD-kit venv (no TensorFlow; the wheel's PyTorch ops need torch 2.11)::

    python3 -m venv /tmp/dpvenv
    /tmp/dpvenv/bin/pip install "deepmd-kit==3.2.*" torch==2.11.0 "e3nn>=0.5.9" "vesin[torch]" mpich
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

#: DeePMD-kit 3.2 fixtures (next to the repository, in ../shared)
DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "deepmd-3.2"
#: fixtures polypot can read (dpa2 is not supported yet)
SUPPORTED = ("se_e2_a", "se_atten_l0", "se_atten_l2", "se_atten_v2_l0")
CASES = ("periodic", "shuffled", "cluster")
QUANTITIES = ("energy", "force", "virial", "atom_energy", "atom_virial")
BACKENDS = ("dp", "pt")
#: (fixture, case, frame) whose reference is ill-conditioned, with the tolerance used there (as
#: in tests/backend/test_jax.py): se_atten_l2 periodic frame 1 has a pair at rcut - 9.3e-5 A whose
#: tiny switch value is divided by max(|r3|, 1e-12) in the attention, amplifying rounding ~1e10.
#: DeePMD-kit 3.2 itself (torch 2.11) differs from its own reference (torch 2.13) by 5e-8 there.
ILL_CONDITIONED = {("se_atten_l2", "periodic", 1): 1e-4}


# ---- --write (polypot's venv) ------------------------------------------------------------------
def write(outdir: Path, fixtures: Path, names: list[str], suffix: str) -> int:
    """Re-save each fixture through polypot's reader and writer."""
    from polypot.io.model_file import load_model, save_model

    outdir.mkdir(parents=True, exist_ok=True)
    for name in names:
        model, params, meta = load_model(fixtures / name / "model.dp")
        out = outdir / f"{name}{suffix}"
        save_model(out, model, params, model_def_script=meta.get("model_def_script"))
        print(f"wrote {out}")
    return 0


# ---- --check (DeePMD-kit's venv) ---------------------------------------------------------------
def fixture_of(path: Path, fixtures: Path) -> str:
    """The fixture a model file belongs to: its stem, else its folder's name."""
    for name in (path.stem, path.parent.name):
        if (fixtures / name / "reference.npz").exists():
            return name
    raise SystemExit(f"{path}: cannot tell which fixture it is (name it <fixture>{path.suffix})")


def max_rel(got: np.ndarray, ref: np.ndarray) -> float:
    """``max |got - ref| / max |ref|``; NaN anywhere gives inf."""
    got = np.asarray(got, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-300))


def to_pth(model_file: Path, workdir: Path) -> Path:
    """``dp convert-backend model_file <workdir>/<stem>.pth``, in-process."""
    from deepmd.entrypoints.convert_backend import convert_backend

    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{model_file.stem}.pth"
    convert_backend(INPUT=str(model_file), OUTPUT=str(out))
    return out


def run_deepmd(model_file: Path, backend: str, frames: dict[str, np.ndarray],
               ref: dict[str, np.ndarray], workdir: Path) -> dict[str, np.ndarray]:
    """DeePMD-kit's ``DeepPot.eval(..., atomic=True)`` on every case, shaped like ``ref``."""
    from deepmd.infer import DeepPot

    target = model_file if backend == "dp" else to_pth(model_file, workdir / backend)
    dp = DeepPot(str(target))
    out: dict[str, np.ndarray] = {}
    for case in CASES:
        coord, cell, atype = (frames[f"{case}_{k}"] for k in ("coord", "cell", "atype"))
        res = dp.eval(coord, None if cell.size == 0 else cell, atype, atomic=True)
        for q, value in zip(QUANTITIES, res, strict=True):
            out[f"{case}_{q}"] = np.asarray(value).reshape(ref[f"{case}_{q}"].shape)
    return out


def compare(name: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float,
            label: str, what: str, exempt: bool = True) -> bool:
    """Print the max relative error per quantity (per frame, worst over cases and frames).

    Frames listed in ``ILL_CONDITIONED`` are reported on their own line with their own tolerance
    when ``exempt``; quantities that are all NaN on the NumPy backend are reported as n/a.
    """
    ok = True
    for q in QUANTITIES:
        if label.endswith(" dp") and all(np.isnan(got[f"{c}_{q}"]).all() for c in CASES):
            print(f"{label:44s} {what:9s} {q:12s} n/a (NumPy backend gives no derivatives)")
            continue
        worst, special = 0.0, []
        for case in CASES:
            g, w = got[f"{case}_{q}"], want[f"{case}_{q}"]
            for f in range(w.shape[0]):
                err = max_rel(g[f], w[f])
                key = (name, case, f)
                if exempt and key in ILL_CONDITIONED:
                    special.append((f"{case} frame {f}", err, ILL_CONDITIONED[key]))
                else:
                    worst = max(worst, err)
        ok &= worst <= tol
        print(f"{label:44s} {what:9s} {q:12s} max rel err {worst:.3e}  "
              f"{'ok' if worst <= tol else 'FAIL'}")
        for where, err, etol in special:
            ok &= err <= etol
            print(f"{label:44s} {what:9s} {q:12s}   ill-conditioned {where}: {err:.3e} "
                  f"(tol {etol:g})  {'ok' if err <= etol else 'FAIL'}")
    return ok


def check_file(path: Path, fixtures: Path, backends: list[str], tol: float, workdir: Path,
               control: bool) -> bool:
    """Check one file on each backend; True when everything is within tolerance."""
    name = fixture_of(path, fixtures)
    frames = dict(np.load(fixtures / name / "frames.npz"))
    ref = dict(np.load(fixtures / name / "reference.npz"))
    original = fixtures / name / "model.dp"
    ok = True
    for backend in backends:
        label = f"{path.name} [{name}] {backend}"
        runs = [("reference", path, ref)]
        if control and path.resolve() != original.resolve():
            runs.append(("original", original, None))
        got: dict[str, np.ndarray] = {}
        for what, model_file, want in runs:
            try:
                out = run_deepmd(model_file, backend, frames, ref, workdir / what)
            except Exception:  # DeePMD-kit rejected the file: show exactly why
                print(f"{label}: DeePMD-kit FAILED on {model_file}\n{traceback.format_exc()}")
                ok = False
                break
            if want is None:  # the original file's outputs are what ours must reproduce
                ok &= compare(name, got, out, tol, label, what, exempt=False)
            else:
                got = out
                ok &= compare(name, got, want, tol, label, what)
    return ok


def check(paths: list[Path], fixtures: Path, backends: list[str], tol: float,
          control: bool) -> int:
    """Check every file; 0 when all agree with the references."""
    import deepmd

    print(f"DeePMD-kit {deepmd.__version__}, tolerance {tol:g}; 'reference' = vs reference.npz, "
          "'original' = vs DeePMD-kit's own model.dp on this same DeePMD-kit")
    ok = True
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="deepmd_compat_") as tmp:
            ok &= check_file(path, fixtures, backends, tol, Path(tmp), control)
    print("ALL OK" if ok else "MISMATCH or REJECTED file (see above)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="OUTDIR",
                      help="re-save the fixtures with polypot (run with polypot's python)")
    mode.add_argument("--check", type=Path, nargs="+", metavar="FILE",
                      help="evaluate files with DeePMD-kit (run with DeePMD-kit's python)")
    ap.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES,
                    help=f"fixture folder (default {DEFAULT_FIXTURES})")
    ap.add_argument("--names", nargs="+", default=list(SUPPORTED),
                    help="fixtures to write (default: all supported)")
    ap.add_argument("--suffix", choices=(".dp", ".yaml"), default=".dp",
                    help="file format to write (default .dp)")
    ap.add_argument("--backend", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                    help="DeePMD-kit backends to check with (default: dp pt)")
    ap.add_argument("--tol", type=float, default=1e-10, help="max relative error allowed")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip evaluating DeePMD-kit's original model.dp for comparison")
    args = ap.parse_args(argv)
    if args.write is not None:
        return write(args.write, args.fixtures, args.names, args.suffix)
    return check(args.check, args.fixtures, args.backend, args.tol, args.control)


if __name__ == "__main__":
    sys.exit(main())
