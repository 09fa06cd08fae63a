"""ms per MD step and peak memory of ``DeepPot.eval`` on periodic water boxes, per backend.

One MD step is one ``polypot.DeepPot(frozen_file).eval(coord, cell, atype)``: neighbour list
(built inside ``eval``), energy, forces and virial. Each model of ``bench/models.py``
(DeePMD-kit water-example sizes, random parameters) is written as ``.dp`` in each precision,
optionally compressed (``polypot compress``, when ``polypot/model/compress.py`` exists; "n/a"
otherwise), and converted to every installed backend's frozen file (.pth torch, .hlo jax,
.savedmodel tensorflow, .json paddle).

Every (backend, model, compressed, precision, size) runs in a FRESH subprocess, sizes in
increasing order: it loads the file, reads its resident memory (VmRSS) as the baseline, makes
``--warmup`` untimed calls (compilation, caches) and up to ``--repeats`` timed calls (stopping
early once ``--budget-s`` seconds have passed since the warm-up began), and reports the median
and the peak RSS (``ru_maxrss``, clean because the process is fresh) minus the baseline.

Out of memory is a result, not a crash: a watchdog thread in the child polls VmRSS every 10 ms
and ends the child as "OOM" above ``--mem-limit-gb`` (RSS, not RLIMIT_AS: JAX and TensorFlow
reserve large virtual ranges); MemoryError, framework out-of-memory errors and a child killed by
SIGKILL (the kernel's OOM killer) are "OOM" too, and the larger sizes of that case are not run.
A size whose warm-up calls are estimated (linearly from the previous size) to exceed the budget
are "skipped"; a child still running after ``3 * budget + 180`` s is "timeout".

Threads: each child is pinned (``sched_setaffinity``) to the first ``--threads`` CPUs, which
bounds every framework's pools (XLA has no exact thread-count flag); OMP_NUM_THREADS,
MKL_NUM_THREADS, TF_NUM_INTRAOP_THREADS (TF_NUM_INTEROP_THREADS=1) and
DP_INTRA_OP_PARALLELISM_THREADS are set to it as well.

Prints a markdown table of ms/step and one of peak RSS growth; ``--csv`` writes every row;
a log-log PNG (one panel per precision) goes to ``--png`` (default: in the work directory).

    .venv/bin/python bench/md_step.py                                 # everything (hours)
    .venv/bin/python bench/md_step.py --sizes 192 768 --models se_e2_a --backends torch jax \\
        --precisions float64 --repeats 3
    .venv/bin/python bench/md_step.py --csv md_step.csv --png md_step.png --budget-s 120
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

FROZEN = {"torch": ".pth", "jax": ".hlo", "tensorflow": ".savedmodel", "paddle": ".json"}
SIZES = [192, 768, 1536, 3072, 6144, 12288]
FIELDS = ["model", "compressed", "precision", "backend", "natoms", "status", "ms", "ms_min",
          "ms_max", "timed_calls", "first_call_s", "peak_rss_mb", "rss_growth_mb", "base_rss_mb",
          "energy", "threads", "note"]
OOM_TEXT = ("out of memory", "outofmemory", "memoryerror", "resource_exhausted",
            "resource exhausted", "cannot allocate memory", "bad_alloc", "failed to allocate",
            "allocation failed", "oom-kill")


# ---------------------------------------------------------------- helpers shared with children

def is_oom(text: str) -> bool:
    """Whether an error message or a stderr tail says the process ran out of memory."""
    low = text.lower()
    return any(word in low for word in OOM_TEXT)


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (``ru_maxrss``, KiB on Linux), MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that size the frameworks' thread pools (children inherit them)."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1",
            "DP_INTRA_OP_PARALLELISM_THREADS": n, "DP_INTER_OP_PARALLELISM_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def pin_cpus(threads: int) -> None:
    """Restrict this process (and the threads it will start) to the first ``threads`` CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads > 0 and threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])


def emit(result: dict) -> None:
    """The child's one line of output that the parent reads."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def start_watchdog(limit_mb: float, period_s: float = 0.01) -> None:
    """End this process as OOM once its resident memory exceeds ``limit_mb``."""
    def watch() -> None:
        while True:
            now = rss_mb()
            if now > limit_mb:
                emit({"status": "OOM", "note": f"RSS {now:.0f} MB > limit {limit_mb:.0f} MB",
                      "peak_rss_mb": round(now, 1)})
                os._exit(3)
            time.sleep(period_s)

    threading.Thread(target=watch, daemon=True).start()


def measure(evaluate: Callable, coord, cell, atype, warmup: int, repeats: int,
            budget_s: float) -> dict:
    """Time ``evaluate(coord, cell, atype)`` (returns energy first) and its memory growth."""
    base = rss_mb()
    start = time.perf_counter()
    out = evaluate(coord, cell, atype)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        evaluate(coord, cell, atype)
    times: list[float] = []
    while len(times) < max(repeats, 1):
        t0 = time.perf_counter()
        out = evaluate(coord, cell, atype)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    peak = peak_rss_mb()
    return {"status": "ok", "ms": round(statistics.median(times) * 1e3, 3),
            "ms_min": round(min(times) * 1e3, 3), "ms_max": round(max(times) * 1e3, 3),
            "timed_calls": len(times), "first_call_s": round(first, 3),
            "peak_rss_mb": round(peak, 1), "rss_growth_mb": round(max(peak - base, 0.0), 1),
            "base_rss_mb": round(base, 1), "energy": float(out[0].ravel()[0])}


def serve(evaluate: Callable, coord, cell, atype, warmup: int) -> dict:
    """Interleaved comparison (``--serve``): warm up, print ``READY``; then time one call per
    ``go`` line on stdin (printing ``T <ms>``) until another line or end of input; the result
    has the keys of :func:`measure`'s that apply."""
    base = rss_mb()  # growth over the loaded model, as in measure()
    out = None
    for _ in range(max(warmup, 1)):
        out = evaluate(coord, cell, atype)
    print("READY", flush=True)
    times: list[float] = []
    for line in sys.stdin:
        if line.strip() != "go":
            break
        t0 = time.perf_counter()
        out = evaluate(coord, cell, atype)
        times.append(time.perf_counter() - t0)
        print(f"T {times[-1] * 1e3:.3f}", flush=True)
    peak = peak_rss_mb()
    result = {"status": "ok", "timed_calls": len(times), "peak_rss_mb": round(peak, 1),
              "rss_growth_mb": round(max(peak - base, 0.0), 1),
              "energy": float(out[0].ravel()[0])}
    if times:
        result["ms"] = round(statistics.median(times) * 1e3, 3)
    return result


def run_child(load: Callable[[], Callable], arrays: Callable[[], tuple], args) -> int:
    """Child main: watchdog, load the model, measure (or :func:`serve` with ``--serve``),
    print RESULT; errors become statuses."""
    start_watchdog(args.mem_limit_gb * 1024)
    try:
        evaluate = load()
        coord, cell, atype = arrays()
        if getattr(args, "serve", False):
            result = serve(evaluate, coord, cell, atype, args.warmup)
        else:
            result = measure(evaluate, coord, cell, atype, args.warmup, args.repeats,
                             args.budget_s)
    except MemoryError as err:
        result = {"status": "OOM", "note": f"MemoryError {err}"[:300]}
    except Exception as err:  # noqa: BLE001 - frameworks raise many kinds of OOM errors
        text = f"{type(err).__name__}: {err}"
        result = {"status": "OOM" if is_oom(text) else "error", "note": text[:300]}
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    emit(result)
    return 0


def parse_child(returncode: int, stdout: str, stderr: str) -> dict:
    """The child's RESULT, or a status made from how it ended."""
    found = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if found:
        return json.loads(found[-1][len("RESULT "):])
    if returncode == -signal.SIGKILL or returncode == 128 + signal.SIGKILL:
        return {"status": "OOM", "note": "killed by SIGKILL (kernel OOM killer?)"}
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    note = f"exit {returncode}: " + (tail[-1] if tail else "no output")
    return {"status": "OOM" if is_oom(stderr[-4000:]) else "error", "note": note[:300]}


def run_case(cmd: list[str], threads: int, timeout_s: float) -> dict:
    """Run one child command (fresh interpreter) and return its result dict."""
    env = dict(os.environ, **thread_env(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "note": f"child still running after {timeout_s:.0f} s"}
    return parse_child(proc.returncode, proc.stdout, proc.stderr)


def child_args(args) -> list[str]:
    """The timing options a child needs, as command-line arguments."""
    return ["--warmup", str(args.warmup), "--repeats", str(args.repeats), "--budget-s",
            str(args.budget_s), "--mem-limit-gb", str(args.mem_limit_gb), "--threads",
            str(args.threads)]


def sweep(cmd_for: Callable[[int], list[str]], sizes: list[int], args,
          log: Callable[[int, dict], None] | None = None) -> dict[int, dict]:
    """Run the sizes in increasing order; after an OOM the larger sizes are OOM without running,
    and a size whose one call is estimated to exceed the budget is skipped."""
    out: dict[int, dict] = {}
    last: tuple[int, float] | None = None
    oom_at = None
    for natoms in sorted(sizes):
        if oom_at is not None:
            res = {"status": "OOM", "note": f"not run: {oom_at} atoms ran out of memory"}
        elif last is not None and last[1] * natoms / last[0] * args.warmup > args.budget_s * 1e3:
            est = last[1] * natoms / last[0] / 1e3
            res = {"status": "skipped",
                   "note": f"estimated {est:.1f} s per call x {args.warmup} warm-up > budget"}
        else:
            res = run_case(cmd_for(natoms), args.threads, 3 * args.budget_s + 180)
            if res["status"] == "ok":
                last = (natoms, res["ms"])
            elif res["status"] == "OOM":
                oom_at = natoms
        out[natoms] = res
        if log:
            log(natoms, res)
    return out


def default_mem_limit_gb() -> float:
    """80 % of the machine's memory."""
    with open("/proc/meminfo") as fh:
        kib = int(fh.readline().split()[1])
    return round(0.8 * kib / 1024**2, 1)


def add_timing_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per case (default 10)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed calls first (compilation; TorchScript needs 2) (default 2)")
    ap.add_argument("--budget-s", type=float, default=60.0,
                    help="seconds per case: repeats stop after it (default 60)")
    ap.add_argument("--mem-limit-gb", type=float, default=default_mem_limit_gb(),
                    help="a child whose RSS exceeds this is OOM (default 80%% of RAM)")
    ap.add_argument("--threads", type=int, default=2, help="CPUs per child (default 2)")
    # a child that times one call per "go" line on stdin (bench/vs_deepmd.py --interleave)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)


# --------------------------------------------------------------------------------- polypot side

def polypot_child(model_file: str, natoms: int, args) -> int:
    pin_cpus(args.threads)

    def load():
        from polypot import DeepPot

        dp = DeepPot(model_file)
        return lambda c, b, t: dp.eval(c[None], b[None], t)

    def arrays():
        from systems import tiled

        return tiled(natoms)

    return run_child(load, arrays, args)


def compression_available() -> bool:
    return importlib.util.find_spec("polypot.model.compress") is not None


def min_nbor_dist() -> float:
    """Smallest interatomic distance of the (periodic, cubic) water frame, Å."""
    import numpy as np
    from systems import water_frame

    coord, cell, _, _ = water_frame()
    frac = np.linalg.solve(cell.T, (coord[:, None] - coord[None]).reshape(-1, 3).T).T
    d = np.linalg.norm((frac - np.round(frac)) @ cell, axis=-1).reshape(len(coord), -1)
    return float(d[~np.eye(len(coord), dtype=bool)].min())


def compress(src: Path, dst: Path, extra: str = "") -> str | None:
    """Compress ``src`` to ``dst``: ``polypot compress -i src -o dst EXTRA`` when the command
    exists (EXTRA defaults to ``--min-nbor-dist`` of the water frame: random models record
    none), else ``polypot.model.compress.compress_model`` with that distance. None on success,
    else why it failed."""
    from polypot.cli.main import build_parser

    if "compress" in build_parser().format_help():
        extra_args = shlex.split(extra) or ["--min-nbor-dist", f"{min_nbor_dist():.6f}"]
        cmd = [sys.executable, "-m", "polypot.cli.main", "compress", "-i", str(src), "-o",
               str(dst), *extra_args]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not dst.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            return "polypot compress failed: " + (tail[-1] if tail else f"exit {proc.returncode}")
        return None
    try:
        from polypot.io.model_file import load_model, save_model
        from polypot.model.compress import compress_model

        model, params, meta = load_model(src)
        model, params = compress_model(model, params, min_nbor_dist())
        save_model(dst, model, params, model_def_script=meta.get("model_def_script"))
    except Exception as err:  # noqa: BLE001 - compression is another module's work in progress
        return f"compress_model failed: {type(err).__name__}: {err}"[:300]
    return None


def write_dp(model: str, precision: str, path: Path) -> None:
    from models import model_config

    from polypot.io.model_file import save_model
    from polypot.model import build_model

    config = model_config(model, precision)
    net, params = build_model(config, seed=0)
    save_model(path, net, params, model_def_script=config)


def table(rows: list[dict], sizes: list[int], key: str, fmt: str) -> list[str]:
    """Markdown table: one line per (model, compressed, precision, backend), one column per size;
    a cell is ``fmt`` of ``row[key]`` when the status is ok, else the status."""
    lines = ["| model | precision | backend | " + " | ".join(f"{n} atoms" for n in sizes) + " |",
             "|---|---|---|" + "---|" * len(sizes)]
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        name = r["model"] + (" (compressed)" if r["compressed"] else "")
        groups.setdefault((name, r["precision"], r["backend"]), {})[int(r["natoms"])] = r
    for (name, prec, backend), by_size in groups.items():
        cells = []
        for n in sizes:
            r = by_size.get(n)
            if r is None:
                cells.append("")
            elif r["status"] == "ok" and r.get(key) is not None:
                cells.append(fmt.format(r[key]))
            else:
                cells.append(r["status"])
        lines.append(f"| {name} | {prec} | {backend} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=None,
                    help="default: every installed one of " + " ".join(FROZEN))
    ap.add_argument("--models", nargs="+", default=None, help="names in bench/models.py")
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--precisions", nargs="+", default=["float64", "float32"])
    ap.add_argument("--compressed", action=argparse.BooleanOptionalAction, default=True,
                    help="also time compressed models (n/a until polypot/model/compress.py exists)")
    ap.add_argument("--compress-args", default="",
                    help="arguments for `polypot compress` after -i/-o (default: --min-nbor-dist "
                    "of the water frame)")
    add_timing_options(ap)
    ap.add_argument("--workdir", type=Path, default=None, help="where model files go (temp dir)")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None, help="default: WORKDIR/md_step.png")
    ap.add_argument("--child", nargs=2, metavar=("FILE", "NATOMS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return polypot_child(args.child[0], int(args.child[1]), args)

    from models import MODELS
    from systems import water_frame

    from polypot.backend.registry import available

    backends = args.backends or [b for b in FROZEN if b in available()]
    models = args.models or list(MODELS)
    sizes = sorted(args.sizes)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="polypot-md-step-"))
    work.mkdir(parents=True, exist_ok=True)
    can_compress = compression_available()
    print(f"# ms per MD step (DeepPot.eval: neighbour list + energy, forces, virial), median of "
          f"<= {args.repeats} after {args.warmup} warm-up; {args.threads} threads; "
          f"water from {water_frame()[3]}; files in {work}", flush=True)
    rows: list[dict] = []

    def record(model, compressed, prec, backend, natoms, res):
        row = {k: "" for k in FIELDS}
        row.update(model=model, compressed=compressed, precision=prec, backend=backend,
                   natoms=natoms, threads=args.threads)
        row.update({k: v for k, v in res.items() if k in FIELDS})
        rows.append(row)
        extra = (f"{row['ms']} ms, +{row['rss_growth_mb']} MB" if res["status"] == "ok"
                 else res.get("note", ""))
        print(f"  {model}{' compressed' if compressed else ''} {prec} {backend} {natoms}: "
              f"{res['status']} {extra}", file=sys.stderr, flush=True)

    for model in models:
        for prec in args.precisions:
            neutral = work / f"{model}_{prec}.dp"
            write_dp(model, prec, neutral)
            variants = [(False, neutral)]
            if args.compressed:
                variants.append((True, work / f"{model}_{prec}_compressed.dp"))
            for compressed, src in variants:
                why = None
                if compressed:
                    why = (compress(neutral, src, args.compress_args) if can_compress
                           else "polypot/model/compress.py not found")
                for backend in backends:
                    frozen = src.with_suffix(FROZEN[backend])
                    status, note = "n/a", why
                    if why is None:
                        # a fresh process per conversion: frameworks imported for one backend
                        # (TensorFlow, torch) can break another's (Paddle's to_static) in-process
                        proc = subprocess.run(
                            [sys.executable, "-m", "polypot.cli.main", "convert-backend",
                             str(src), str(frozen)], capture_output=True, text=True)
                        if proc.returncode != 0:
                            status = "n/a" if compressed else "error"
                            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                            note = f"convert failed: {tail}"[:300]
                    if note is not None:
                        for n in sizes:
                            record(model, compressed, prec, backend, n,
                                   {"status": status, "note": note})
                        continue
                    script = str(Path(__file__).resolve())

                    def cmd_for(n, frozen=frozen, script=script):
                        return [sys.executable, script, "--child", str(frozen), str(n),
                                *child_args(args)]

                    sweep(cmd_for, sizes, args,
                          lambda n, res, m=model, c=compressed, p=prec, b=backend:
                          record(m, c, p, b, n, res))

    print("\n## ms per step\n")
    print("\n".join(table(rows, sizes, "ms", "{:.1f}")))
    print("\n## peak RSS growth during eval, MB (fresh process per size)\n")
    print("\n".join(table(rows, sizes, "rss_growth_mb", "{:.0f}")))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nCSV: {args.csv}")
    from plot import plot_ms_per_step

    png = plot_ms_per_step(rows, args.png or work / "md_step.png",
                           title=f"DeepPot.eval per MD step, {args.threads} threads")
    print(f"plot: {png}" if png else "plot: nothing to plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
