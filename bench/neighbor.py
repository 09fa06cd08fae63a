"""ms per neighbour-list build (extended system + padded list) on tiled water boxes.

    .venv/bin/python bench/neighbor.py [--sizes 192 1536 12288]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from systems import tiled  # noqa: E402

from polypot.neighbor import build_neighbor_data  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    print("| atoms | sel [46, 92] ms | sel 120 (mixed) ms |")
    print("|---|---|---|")
    for n in args.sizes:
        coord, cell, atype = tiled(n)
        cells = []
        for sel in ([46, 92], 120):
            build_neighbor_data(coord[None], cell[None], atype, 6.0, sel)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                build_neighbor_data(coord[None], cell[None], atype, 6.0, sel)
                times.append(time.perf_counter() - t0)
            cells.append(f"{statistics.median(times) * 1e3:.1f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
