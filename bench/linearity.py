"""How ms per ``DeepPot.eval`` grows with the system: two sizes' calls alternated in one process.

Fresh processes on a shared machine differ by 10-25%, which is as much as the linearity target
allows (time per step from 1536 to 12288 atoms within 15% of 8x). Here every model file runs
both sizes in one process, calls alternated (file by file, size by size, ``--repeats`` rounds
after one warm-up call each), and the script prints each file's medians and their ratio against
the ratio of atom counts.

    .venv/bin/python bench/linearity.py model.hlo compressed.hlo
    .venv/bin/python bench/linearity.py --sizes 192 1536 model.pth
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
    ap.add_argument("--sizes", type=int, nargs=2, default=[1536, 12288],
                    help="two tiled water boxes (192 x 2^k atoms; default 1536 12288)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    args = ap.parse_args()

    from systems import tiled

    from polypot import DeepPot

    small, large = sorted(args.sizes)
    boxes = {n: tiled(n) for n in (small, large)}
    pots = {f: DeepPot(f) for f in args.files}
    for p in pots.values():  # compiles each program for each size
        for coord, cell, atype in boxes.values():
            p.eval(coord[None], cell[None], atype)
    times: dict[tuple[str, int], list[float]] = {(f, n): [] for f in pots for n in boxes}
    for _ in range(args.repeats):
        for f, p in pots.items():
            for n, (coord, cell, atype) in boxes.items():
                t0 = time.perf_counter()
                p.eval(coord[None], cell[None], atype)
                times[f, n].append(time.perf_counter() - t0)
    print(f"{args.repeats} alternated calls per file and size; atoms x{large / small:g}")
    print(f"| file | {small} atoms median ms | {large} atoms median ms | ratio of medians "
          f"| ratio of minima |\n|---|---|---|---|---|")
    for f in pots:
        a, b = times[f, small], times[f, large]
        print(f"| {f} | {statistics.median(a) * 1e3:.0f} | {statistics.median(b) * 1e3:.0f} "
              f"| {statistics.median(b) / statistics.median(a):.2f} | {min(b) / min(a):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
