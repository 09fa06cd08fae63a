"""A/B timing: ms per ``DeepPot.eval`` of several model files, calls alternated in one process.

Fresh processes on a shared machine differ by 10-25%; alternating the calls of two builds of the
same model (e.g. a ``.hlo`` frozen before and after a change) in one process compares them under
the same conditions. Prints each file's median and minimum, and the largest difference of its
energy per atom, forces and virial from the first file's. ``--split`` also times the two halves
of each call, the neighbour list (``DeepPot.neighbor_data``, NumPy on the host) and the model
(energy, forces, virial from that list), e.g. to see what a GPU leaves to the CPU.

    .venv/bin/python bench/alternate.py --natoms 1536 old.hlo new.hlo
    .venv/bin/python bench/alternate.py --natoms 12288 --split model.hlo
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", help="model files (any format DeepPot reads)")
    ap.add_argument("--natoms", type=int, default=1536, help="tiled water box (192 x 2^k)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--split", action="store_true",
                    help="also time the neighbour list and the model separately")
    args = ap.parse_args()

    import numpy as np
    from systems import tiled

    from polypot import DeepPot

    coord, cell, atype = tiled(args.natoms)
    pots = [DeepPot(f) for f in args.files]
    outs = [p.eval(coord[None], cell[None], atype) for p in pots]  # compiles
    times: list[list[float]] = [[] for _ in pots]
    parts: list[list[tuple[float, float]]] = [[] for _ in pots]
    for _ in range(args.repeats):
        for i, p in enumerate(pots):
            t0 = time.perf_counter()
            p.eval(coord[None], cell[None], atype)
            times[i].append(time.perf_counter() - t0)
            if args.split:
                t0 = time.perf_counter()
                nd = p.neighbor_data(coord[None], cell[None], atype)
                t1 = time.perf_counter()
                p._runner.run(nd)
                parts[i].append((t1 - t0, time.perf_counter() - t1))
    print(f"{args.natoms} atoms, {args.repeats} alternated calls each")
    print("| file | median ms | min ms | max dE/atom eV | max dF eV/A | max dV eV |")
    print("|---|---|---|---|---|---|")
    for f, t, o in zip(args.files, times, outs, strict=True):
        de = float(np.max(np.abs(o[0] - outs[0][0]))) / args.natoms
        df = float(np.max(np.abs(o[1] - outs[0][1])))
        dv = float(np.max(np.abs(o[2] - outs[0][2])))
        print(f"| {f} | {statistics.median(t) * 1e3:.1f} | {min(t) * 1e3:.1f} | {de:.1e} "
              f"| {df:.1e} | {dv:.1e} |")
    if args.split:
        print("\n| file | neighbour list median ms | model median ms |\n|---|---|---|")
        for f, pt in zip(args.files, parts, strict=True):
            print(f"| {f} | {statistics.median(a for a, _ in pt) * 1e3:.1f} "
                  f"| {statistics.median(b for _, b in pt) * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
