"""Achieved GFLOP/s of one MD step (energy, forces, virial) of a JAX model against the CPU's peak.

The FLOP count of a step is XLA's own (``compiled.cost_analysis()["flops"]``) for the whole-system
program: one pass over all pairs, no chunks, no recomputation (XLA counts a loop body once, so a
chunked program cannot be counted this way). That count is the work the step needs; it is divided
by the time of the program an MD run actually uses (the default, chunked for large systems) and,
for comparison, by the time of the whole-system program itself. Peak: this CPU's nominal peak
(cores x clock x f64 FLOP per cycle from its vector units, printed with its assumptions) and the
measured rate of a large NumPy float64 matrix product on the same threads.

    .venv/bin/python bench/flops.py                       # se_e2_a, 192 and 1536 atoms
    .venv/bin/python bench/flops.py --model dpa1_l0 --sizes 1536 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pin(threads: int) -> None:
    """Run on the first ``threads`` CPUs (bounds XLA's and the BLAS thread pools)."""
    os.sched_setaffinity(0, set(range(threads)))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def nominal_peak(threads: int) -> tuple[float, str]:
    """(GFLOP/s, how it was derived) from /proc/cpuinfo: cores x clock x FLOP per cycle."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                  if ln.startswith("flags")), [])
    mhz = next((float(ln.split(":", 1)[1]) for ln in info.splitlines()
                if ln.startswith("cpu MHz")), float("nan"))
    family = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                   if ln.startswith("cpu family")), "")
    amd = "AuthenticAMD" in info
    if "avx512f" in flags and amd and family == "25":
        per_cycle, how = 16, "Zen 4: AVX-512 on two 256-bit halves, 4 doubles x 2 (FMA) x 2 units"
    elif "avx512f" in flags:
        per_cycle, how = 32, "AVX-512: 8 doubles x 2 (FMA) x 2 FMA units"
    elif "fma" in flags:
        per_cycle, how = 16, "AVX2: 4 doubles x 2 (FMA) x 2 FMA units"
    else:
        per_cycle, how = 4, "SSE2: 2 doubles x 2 units"
    peak = threads * mhz * 1e-3 * per_cycle
    return peak, f"{threads} cores x {mhz / 1e3:.2f} GHz x {per_cycle} FLOP/cycle ({how})"


def gemm_rate(n: int = 3072, repeats: int = 3) -> float:
    """GFLOP/s of a float64 n x n matrix product with NumPy's BLAS."""
    import numpy as np

    a = np.random.default_rng(0).normal(size=(n, n))
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n ** 3 / best * 1e-9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_rate(model_name: str, natoms: int, repeats: int) -> dict:
    """FLOPs of one step (whole-system program) and the times of both programs."""
    import jax  # noqa: TID251 (this script measures XLA programs)
    from models import model_config
    from systems import tiled

    from polypot.backend import jax_kernels
    from polypot.backend.jax import JaxBackend, lower_function
    from polypot.infer.runner import pad_extended
    from polypot.model import build_model
    from polypot.neighbor import build_neighbor_data

    model, params = build_model(model_config(model_name, "float64"), seed=1)
    p = JaxBackend().convert_params(params)
    coord, cell, atype = tiled(natoms)
    nd = pad_extended(build_neighbor_data(coord[None], cell[None], atype, model.rcut, model.sel))
    args = (p, nd.coord, nd.atype, nd.nlist, nd.mapping)

    def compiled(whole: bool):
        saved = jax_kernels.WHOLE_SYSTEM_PAIRS
        if whole:
            jax_kernels.WHOLE_SYSTEM_PAIRS = 1 << 62
        try:
            return jax.jit(lower_function(model)).lower(*args).compile()
        finally:
            jax_kernels.WHOLE_SYSTEM_PAIRS = saved

    def median_time(program) -> float:
        jax.block_until_ready(program(*args))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(program(*args))
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    whole = compiled(True)
    cost = whole.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    default = compiled(False)
    return {"natoms": natoms, "gflop": cost["flops"] * 1e-9,
            "transcendentals": cost.get("transcendentals", float("nan")),
            "t_default": median_time(default), "t_whole": median_time(whole)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="se_e2_a")
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pin(args.threads)
    import jax  # noqa: TID251 (this script measures XLA programs)

    jax.config.update("jax_enable_x64", True)
    peak, how = nominal_peak(args.threads)
    gemm = gemm_rate()
    print(f"nominal peak {peak:.0f} GFLOP/s = {how}")
    print(f"NumPy float64 3072^3 matrix product: {gemm:.1f} GFLOP/s ({gemm / peak:.0%} of "
          "nominal)\n")
    print(f"{args.model}, float64, {args.threads} threads; FLOPs counted by XLA on the "
          "whole-system program\n")
    print("| atoms | GFLOP/step | ms/step (MD program) | GFLOP/s | % nominal | % of gemm "
          "| ms/step (whole program) | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = step_rate(args.model, n, args.repeats)
        rate = r["gflop"] / r["t_default"]
        rate_whole = r["gflop"] / r["t_whole"]
        print(f"| {n} | {r['gflop']:.2f} | {r['t_default'] * 1e3:.0f} | {rate:.1f} "
              f"| {rate / peak:.0%} | {rate / gemm:.0%} | {r['t_whole'] * 1e3:.0f} "
              f"| {rate_whole:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
