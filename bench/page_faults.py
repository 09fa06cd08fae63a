"""Where a ``DeepPot.eval`` call's time goes at the operating-system level: wall, user and system
time and minor page faults per call, one fresh process per model file and size.

A call that allocates a block larger than glibc's mmap threshold (32 MiB at most) gets fresh
pages from the kernel each time and page-faults them in; that shows as system time. For ``.hlo``
files the script also prints how many calls a split frame took (``_piece_counts``, see
``polypot/backend/jax_frozen.py``) and the largest temporary buffer per centre seen.

    .venv/bin/python bench/page_faults.py --natoms 1536 12288 compressed.hlo plain.hlo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(model: str, natoms: int, warmup: int, repeats: int) -> dict:
    """In a fresh process: time ``repeats`` calls after ``warmup`` on a tiled water box."""
    import resource
    import statistics
    import time

    sys.path.insert(0, str(HERE))
    from systems import tiled

    from polypot import DeepPot

    coord, cell, atype = tiled(natoms)
    dp = DeepPot(model)
    for _ in range(warmup):
        dp.eval(coord[None], cell[None], atype)
    walls = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0 = time.perf_counter()
        dp.eval(coord[None], cell[None], atype)
        walls.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    frozen = getattr(dp._runner, "frozen", None)
    return {
        "model": model, "natoms": natoms,
        "wall_ms": 1e3 * statistics.median(walls),
        "user_ms": 1e3 * (r1.ru_utime - r0.ru_utime) / repeats,
        "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime) / repeats,
        "faults": (r1.ru_minflt - r0.ru_minflt) / repeats,
        "calls": getattr(frozen, "_piece_counts", {}).get(natoms, ""),
        "kb_per_centre": getattr(frozen, "_centre_bytes", 0) / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="*", help="model files (any format DeepPot reads)")
    ap.add_argument("--natoms", type=int, nargs="+", default=[1536],
                    help="tiled water boxes (192 x 2^k atoms; default 1536)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls (default 10)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.warmup, args.repeats)))
        return 0
    if not args.files:
        ap.error("give at least one model file")
    print("| model | atoms | ms per call (median) | user ms | system ms | minor faults | "
          "calls per frame | temp KiB per centre |")
    print("|---|---|---|---|---|---|---|---|")
    status = 0
    for model in args.files:
        for n in args.natoms:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", model, str(n), "--warmup",
                 str(args.warmup), "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"| {model} | {n} | failed: {proc.stderr.strip().splitlines()[-1:]} |"
                      " | | | | |")
                status = 1
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {model} | {n} | {r['wall_ms']:.1f} | {r['user_ms']:.1f} | "
                  f"{r['sys_ms']:.1f} | {r['faults']:.0f} | {r['calls']} | "
                  f"{r['kb_per_centre']:.0f} |")
    return status


if __name__ == "__main__":
    sys.exit(main())
