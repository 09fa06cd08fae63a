"""A/B timing: ms per ``DeepPot.eval`` of several model files, calls alternated in one process.

Fresh processes on a shared machine differ by 10-25%; alternating the calls of two builds of the
same model (e.g. a ``.hlo`` frozen before and after a change) in one process compares them under
the same conditions. Prints each file's median and minimum, and the largest difference of its
energy per atom, forces and virial from the first file's. ``--split`` also times the two halves
of each call, the neighbour list (``DeepPot.neighbor_data``, NumPy on the host) and the model
(energy, forces, virial from that list), e.g. to see what a GPU leaves to the CPU.

Several ``--natoms`` alternate the sizes too, and the script then prints how each file's time
grew from the smallest size to the largest against the ratio of atom counts: the noise of fresh
processes is as large as the linearity target allows (1536 to 12288 atoms within 15% of 8x).

    .venv/bin/python bench/alternate.py --natoms 1536 old.hlo new.hlo
    .venv/bin/python bench/alternate.py --natoms 12288 --split model.hlo
    .venv/bin/python bench/alternate.py --natoms 1536 12288 --repeats 5 model.hlo compressed.hlo
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
    ap.add_argument("--natoms", type=int, nargs="+", default=[1536],
                    help="tiled water boxes (192 x 2^k atoms; default 1536)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--split", action="store_true",
                    help="also time the neighbour list and the model separately")
    args = ap.parse_args()

    import numpy as np
    from systems import tiled

    from polypot import DeepPot

    sizes = sorted(set(args.natoms))
    boxes = {n: tiled(n) for n in sizes}
    pots = [DeepPot(f) for f in args.files]
    # the first call at each size compiles
    outs = {n: [p.eval(c[None], b[None], t) for p in pots] for n, (c, b, t) in boxes.items()}
    times = {(n, i): [] for n in sizes for i in range(len(pots))}
    parts = {(n, i): [] for n in sizes for i in range(len(pots))}
    for _ in range(args.repeats):
        for n, (coord, cell, atype) in boxes.items():
            for i, p in enumerate(pots):
                t0 = time.perf_counter()
                p.eval(coord[None], cell[None], atype)
                times[n, i].append(time.perf_counter() - t0)
                if args.split:
                    t0 = time.perf_counter()
                    nd = p.neighbor_data(coord[None], cell[None], atype)
                    t1 = time.perf_counter()
                    p._runner.run(nd)
                    parts[n, i].append((t1 - t0, time.perf_counter() - t1))
    for n in sizes:
        print(f"{n} atoms, {args.repeats} alternated calls each")
        print("| file | median ms | min ms | max dE/atom eV | max dF eV/A | max dV eV |")
        print("|---|---|---|---|---|---|")
        ref = outs[n][0]
        for i, (f, o) in enumerate(zip(args.files, outs[n], strict=True)):
            de = float(np.max(np.abs(o[0] - ref[0]))) / n
            df = float(np.max(np.abs(o[1] - ref[1])))
            dv = float(np.max(np.abs(o[2] - ref[2])))
            t = times[n, i]
            print(f"| {f} | {statistics.median(t) * 1e3:.1f} | {min(t) * 1e3:.1f} | {de:.1e} "
                  f"| {df:.1e} | {dv:.1e} |")
        if args.split:
            print("\n| file | neighbour list median ms | model median ms |\n|---|---|---|")
            for i, f in enumerate(args.files):
                pt = parts[n, i]
                print(f"| {f} | {statistics.median(a for a, _ in pt) * 1e3:.1f} "
                      f"| {statistics.median(b for _, b in pt) * 1e3:.1f} |")
        print()
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        print(f"growth from {small} to {large} atoms (x{large / small:g})")
        print("| file | ratio of medians | ratio of minima |\n|---|---|---|")
        for i, f in enumerate(args.files):
            a, b = times[small, i], times[large, i]
            print(f"| {f} | {statistics.median(b) / statistics.median(a):.2f} "
                  f"| {min(b) / min(a):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
