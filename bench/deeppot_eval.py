"""ms per ``DeepPot.eval`` (energy + force + virial) on periodic water boxes, per backend.

Each model (DeePMD-kit water-example sizes, random parameters) is written as ``.dp`` and
converted to every installed backend's frozen file; DeepPot on that file is timed (neighbour
list included) after a warm-up. Prints a markdown table; ``--csv`` also writes the rows.

    .venv/bin/python bench/deeppot_eval.py                        # everything
    .venv/bin/python bench/deeppot_eval.py --sizes 192 1536 --backends torch jax --models se_e2_a
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import MODELS, model_config  # noqa: E402
from systems import tiled, water_frame  # noqa: E402

from polypot import DeepPot  # noqa: E402
from polypot.backend.registry import BACKENDS, available  # noqa: E402
from polypot.cli.convert import convert  # noqa: E402
from polypot.io.model_file import save_model  # noqa: E402
from polypot.model import build_model  # noqa: E402

FROZEN = {"torch": ".pth", "jax": ".hlo", "tensorflow": ".savedmodel", "paddle": ".json"}


def time_eval(dp: DeepPot, natoms: int, repeats: int, budget_s: float) -> float:
    coord, cell, atype = tiled(natoms)
    dp.eval(coord[None], cell[None], atype)  # warm-up: compilation, caches
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        dp.eval(coord[None], cell[None], atype)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288])
    ap.add_argument("--backends", nargs="+", default=[b for b in FROZEN if b in available()])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--precisions", nargs="+", default=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds per timed cell; sizes estimated to need longer per call are "
                    "reported as skipped")
    ap.add_argument("--neutral", action="store_true",
                    help="time the .dp file on each backend instead of its frozen file")
    ap.add_argument("--csv", help="also write the rows to this CSV file")
    args = ap.parse_args()

    print(f"# DeepPot.eval, ms per call (median of <= {args.repeats}); frame: {water_frame()[3]}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="polypot-bench-"))
    cols = [str(n) for n in args.sizes]
    print("| model | precision | backend | " + " | ".join(f"{c} atoms" for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for mname in args.models:
        for prec in args.precisions:
            model, params = build_model(model_config(mname, prec), seed=0)
            neutral = work / f"{mname}_{prec}.dp"
            save_model(neutral, model, params)
            for bname in args.backends:
                if bname not in BACKENDS or bname not in available():
                    continue
                if args.neutral:
                    dp = DeepPot(neutral, backend=bname)
                else:
                    frozen = work / f"{mname}_{prec}{FROZEN[bname]}"
                    convert(neutral, frozen)
                    dp = DeepPot(frozen)
                cells = []
                last = None  # (natoms, ms) of the previous size
                for natoms in args.sizes:
                    estimate = None if last is None else last[1] * natoms / last[0]
                    if estimate is not None and estimate > args.budget * 1e3:
                        # O(N): a call would take longer than the budget; say so, don't wait
                        cells.append(f"skipped (~{estimate / 1e3:.0f} s)")
                        rows.append({"model": mname, "precision": prec, "backend": bname,
                                     "natoms": natoms, "ms": cells[-1]})
                        continue
                    try:
                        ms = time_eval(dp, natoms, args.repeats, args.budget)
                        last = (natoms, ms)
                        cells.append(f"{ms:.1f}")
                    except MemoryError:
                        cells.append("OOM")
                    except RuntimeError as err:  # framework OOM errors
                        cells.append("OOM" if "memory" in str(err).lower() else "error")
                    rows.append({"model": mname, "precision": prec, "backend": bname,
                                 "natoms": natoms, "ms": cells[-1]})
                print(f"| {mname} | {prec} | {bname} | " + " | ".join(cells) + " |", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
