"""Compare polypot with the DeePMD-kit 3.2 fixtures and time DeepPot on a 192-atom frame.

    .venv/bin/python tools/fixture_report.py [--backend numpy|torch|jax|tensorflow|paddle|all]

For every fixture model and case (periodic, shuffled, cluster) prints the largest relative error
(max |ours - theirs| / max |theirs|) of each quantity, then ms per evaluation on the 192-atom
periodic frame (median of 10 after a warm-up). NumPy gives energies and atomic energies only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_data import CASES, FIXTURE_MODELS, FIXTURES, fixture_frames, fixture_reference  # noqa: E402

from polypot import DeepPot  # noqa: E402
from polypot.backend.registry import available  # noqa: E402

KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def report(backend: str) -> None:
    print(f"\n## backend: {backend}\n")
    print("| model | case | " + " | ".join(KEYS) + " | ms/eval (192 atoms) |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for name in FIXTURE_MODELS:
        dp = DeepPot(FIXTURES / name / "model.dp", backend=backend)
        for case in CASES:
            coord, cell, atype = fixture_frames(name, case)
            ref = fixture_reference(name, case)
            if backend == "numpy":
                e, ae = dp.eval_energy(coord, cell, atype)
                got = {"energy": e[:, 0], "atom_energy": ae[..., 0]}
            else:
                out = dp.eval(coord, cell, atype, atomic=True)
                got = dict(zip(KEYS, out, strict=True))
                got["energy"], got["atom_energy"] = got["energy"][:, 0], got["atom_energy"][..., 0]
            errs = [f"{rel(got[k], ref[k]):.1e}" if k in got else "-" for k in KEYS]
            ms = ""
            if case == "periodic":
                c, h = coord[:1], cell[:1]
                call = dp.eval_energy if backend == "numpy" else dp.eval
                call(c, h, atype)
                times = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    call(c, h, atype)
                    times.append(time.perf_counter() - t0)
                ms = f"{statistics.median(times) * 1e3:.1f}"
            print(f"| {name} | {case} | " + " | ".join(errs) + f" | {ms} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="numpy")
    args = ap.parse_args()
    backends = available() if args.backend == "all" else [args.backend]
    for b in backends:
        report(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
