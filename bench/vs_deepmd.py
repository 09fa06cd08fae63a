"""DeePMD-kit's ``DeepPot`` and polypot's on the same ``.dp`` model: ms per call, peak memory.

DeePMD-kit is never imported in polypot's interpreter: it runs in ``--deepmd-python`` (a
separate venv with deepmd-kit; see bench/README.md), which executes this same file in its
``--deepmd-child`` mode (standard library + numpy + deepmd only) and prints one JSON line.

The model (``--model FILE``, else ``--model-name`` from bench/models.py with random parameters)
is written as ``model.dp``. DeePMD-kit gets ``dp convert-backend model.dp model_deepmd.pth``
(its PyTorch backend; ``deepmd.infer.DeepPot("model.dp")`` would pick its NumPy "dpmodel"
backend, which is slow, so .pth is the fair comparison); polypot gets its frozen file per
``--backends``. Both time ``DeepPot.eval(coord, cell, atype)`` (each builds its neighbour list
inside eval: energy, forces, virial) on the tiled periodic water boxes, with the method of
``bench/md_step.py``: a fresh process per (code, backend, size), ``--threads`` CPUs, warm-up,
median of ``--repeats``, peak RSS growth over the loaded model, OOM/skip/timeout as results.

``--compressed`` also compares compressed models: DeePMD-kit's ``dp --pt compress -i
model_deepmd.pth -o model_deepmd_compressed.pth -t input.json`` (the .dp carries no minimal
neighbour distance, so the water data ``--training-data`` is given through a generated
input.json) against ``polypot compress -i model.dp -o model_compressed.dp -t input.json``.

``--rounds K`` runs the two codes alternately K times (fresh processes each time) and reports
each code's median call and the ratio of every round: on a machine shared with other jobs the
speed drifts over minutes, and two runs of one script gave DeePMD-kit 584 and 452 ms for the
same compressed model.

``--interleave K`` alternates single calls instead: per size, one process of each code loads
its model, warms up and then waits; the parent asks them in turn for one timed call, K times,
and reports each code's median and the ratio of every pair of calls. Drift over seconds then
slows both codes alike (on the AMD machine of 2026-11-28 one process's calls varied by 30%
within a minute). The idle process holds its memory but no CPU.

    .venv/bin/python bench/vs_deepmd.py --sizes 192 1536                     # se_e2_a float64
    .venv/bin/python bench/vs_deepmd.py --model-name dpa1_l0 --compressed --csv vs.csv
    .venv/bin/python bench/vs_deepmd.py --deepmd-python /path/to/venv/bin/python --model m.dp
    .venv/bin/python bench/vs_deepmd.py --deepmd-backend tf --model-name se_e2_a --sizes 1536 \
        12288 --backends jax --compressed --repeats 3 --warmup 1 --rounds 3
    .venv/bin/python bench/vs_deepmd.py --deepmd-backend tf --model-name se_e2_a --sizes 1536 \
        12288 --backends jax --compressed --warmup 1 --interleave 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import md_step  # noqa: E402  (standard library only at import: usable in DeePMD-kit's venv)

#: frozen-file suffix of each DeePMD-kit backend compared
DEEPMD_SUFFIX = {"pt": ".pth", "tf": ".pb"}
WATER = Path(__file__).resolve().parents[2] / "shared" / "data" / "water" / "data_0"


def deepmd_child(model_file: str, npz: str, args: argparse.Namespace) -> int:
    """In DeePMD-kit's interpreter: time its DeepPot on the arrays of ``npz``."""
    md_step.pin_cpus(args.threads)

    def load():
        from deepmd.infer import DeepPot

        dp = DeepPot(model_file)
        return lambda c, b, t: dp.eval(c.reshape(1, -1), b.reshape(1, 9), t)

    def arrays():
        import numpy as np

        with np.load(npz) as z:
            return z["coord"], z["cell"], z["atype"]

    return md_step.run_child(load, arrays, args)


def run_dp(deepmd_python: str, argv: list[str], cwd: Path, threads: int) -> None:
    """Run DeePMD-kit's ``dp`` command of that venv; raise with its last lines on failure."""
    dp = Path(deepmd_python).parent / "dp"
    proc = subprocess.run([str(dp), *argv], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, **md_step.thread_env(threads)))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"dp {' '.join(argv)} failed:\n{tail}")


def fmt_mem(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("status", "")
    return f"+{r['rss_growth_mb']:.0f} ({r['peak_rss_mb']:.0f})"


def median_result(runs: list[dict[int, dict]], n: int) -> dict:
    """The result of size ``n`` with the median ms over several rounds' sweeps (the lower
    middle one for an even count), or the first round's failure if no round ran."""
    ok = sorted((r[n] for r in runs if r.get(n, {}).get("status") == "ok"),
                key=lambda res: res["ms"])
    return ok[(len(ok) - 1) // 2] if ok else runs[0].get(n, {})


def fastest(pp_res: dict[str, dict[int, dict]], n: int) -> str | None:
    """The polypot backend that ran size ``n`` fastest, or None if none ran it."""
    ok = {b: res[n] for b, res in pp_res.items() if res.get(n, {}).get("status") == "ok"}
    return min(ok, key=lambda b: ok[b]["ms"]) if ok else None


def round_ratios(dp_runs: list[dict[int, dict]], pp_runs: list[dict[str, dict[int, dict]]],
                 n: int) -> list[float]:
    """polypot's fastest backend / DeePMD-kit, ms, in each round where both ran size ``n``."""
    out = []
    for d, p in zip(dp_runs, pp_runs, strict=True):
        best = fastest(p, n)
        if d.get(n, {}).get("status") == "ok" and best:
            out.append(p[best][n]["ms"] / d[n]["ms"])
    return out


class Server:
    """A child started with ``--serve``: loaded and warmed up, it times one call per :meth:`go`
    and stays idle (blocked on its stdin) in between."""

    def __init__(self, cmd: list[str], threads: int) -> None:
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([*cmd, "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     env=dict(os.environ, **md_step.thread_env(threads)))
        self.alive = self._next("READY") is not None

    def _next(self, prefix: str) -> str | None:
        """The child's next line starting with ``prefix`` (other output skipped), None at
        its end."""
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line.strip()
        return None

    def go(self) -> float | None:
        """ms of one call, None if the child has died."""
        if not self.alive:
            return None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self._next("T ")
        self.alive = line is not None
        return float(line.split()[1]) if line else None

    def finish(self) -> dict:
        """End the child; its RESULT (status, ms, energy, memory) or how it failed."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        out = self.proc.stdout.read()
        code = self.proc.wait()
        self.err.seek(0)
        return md_step.parse_child(code, out, self.err.read())


def interleaved(dp_cmd: list[str], pp_cmd: list[str], calls: int,
                threads: int) -> tuple[dict, dict, list[float]]:
    """DeePMD-kit's and polypot's calls alternated one by one, each code in its own process
    (loaded and warmed up first): both results and polypot / DeePMD-kit of each pair of calls."""
    dp = Server(dp_cmd, threads)
    pp = Server(pp_cmd, threads)
    ratios = []
    for _ in range(calls):
        # one code failing (e.g. out of memory) leaves the other's calls to be timed alone
        d, p = dp.go(), pp.go()
        if d is None and p is None:
            break
        if d is not None and p is not None:
            ratios.append(p / d)
    return dp.finish(), pp.finish(), ratios


def comparison_table(dp_res: dict[int, dict], pp_res: dict[str, dict[int, dict]],
                     sizes: list[int], ratios: dict[int, list[float]] | None = None) -> list[str]:
    """Markdown lines: per size DeePMD-kit's and polypot's fastest backend, ratio, memory;
    ``ratios``: polypot / DeePMD-kit in each round (``--rounds``), a column of its own."""
    lines = ["| atoms | DeePMD-kit ms | polypot ms (backend) | DeePMD-kit / polypot | "
             "DeePMD-kit MB +growth (peak) | polypot MB +growth (peak) | abs dE per atom, eV | "
             "all polypot backends ms |" + (" polypot / DeePMD-kit per round |" if ratios else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if ratios else "")]
    for n in sizes:
        d = dp_res.get(n, {})
        best = fastest(pp_res, n)
        p = pp_res[best][n] if best else {}
        d_ms = f"{d['ms']:.1f}" if d.get("status") == "ok" else d.get("status", "")
        p_ms = f"{p['ms']:.1f} ({best})" if best else "/".join(
            sorted({res.get(n, {}).get("status", "") for res in pp_res.values()}))
        ratio = f"{d['ms'] / p['ms']:.2f}" if best and d.get("status") == "ok" else ""
        de = (f"{abs(d['energy'] - p['energy']) / n:.1e}"
              if best and d.get("status") == "ok" else "")
        others = ", ".join(f"{b} {res[n]['ms']:.1f}" if res.get(n, {}).get("status") == "ok"
                           else f"{b} {res.get(n, {}).get('status', '')}"
                           for b, res in pp_res.items())
        per_round = (" " + " ".join(f"{r:.2f}" for r in ratios.get(n, [])) + " |"
                     if ratios else "")
        lines.append(f"| {n} | {d_ms} | {p_ms} | {ratio} | {fmt_mem(d)} | "
                     f"{fmt_mem(p) if best else ''} | {de} | {others} |{per_round}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--deepmd-python", default="/tmp/dpvenv/bin/python",
                    help="interpreter of a venv with deepmd-kit (default /tmp/dpvenv/bin/python)")
    ap.add_argument("--model", type=Path, default=None, help="a model file (any polypot format)")
    ap.add_argument("--model-name", default="se_e2_a", help="bench/models.py entry (no --model)")
    ap.add_argument("--precision", default="float64", choices=["float64", "float32"])
    ap.add_argument("--sizes", type=int, nargs="+", default=md_step.SIZES)
    ap.add_argument("--backends", nargs="+", default=["torch", "jax"],
                    help="polypot backends to try; the fastest per size is compared (torch jax)")
    ap.add_argument("--compressed", action="store_true", help="also compare compressed models")
    ap.add_argument("--deepmd-backend", choices=sorted(DEEPMD_SUFFIX), default="pt",
                    help="DeePMD-kit's backend: pt (.pth, default) or tf (.pb; needs "
                         "tensorflow-cpu in its venv, see bench/README.md)")
    ap.add_argument("--training-data", type=Path, default=WATER,
                    help="system for `dp --pt compress -t` (minimal neighbour distance)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run DeePMD-kit and polypot alternately this many times per model "
                         "(each a fresh process per size); the tables show the median call of "
                         "each code and the ratio of every round (default 1)")
    ap.add_argument("--interleave", type=int, default=0, metavar="K",
                    help="instead of --rounds: per size, one process of each code (the first "
                         "of --backends for polypot) kept loaded, their calls alternated K "
                         "times; the per-round column then holds each pair's ratio")
    md_step.add_timing_options(ap)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--deepmd-child", nargs=2, metavar=("FILE", "NPZ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.deepmd_child:
        return deepmd_child(*args.deepmd_child, args)

    import numpy as np
    from systems import tiled

    from polypot.backend.registry import available
    from polypot.cli.convert import convert
    from polypot.io.model_file import load_model

    sizes = sorted(args.sizes)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="polypot-vs-deepmd-"))
    work.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(
        [args.deepmd_python, "-c", "import deepmd, torch; print(deepmd.__version__, "
         "torch.__version__)"], capture_output=True, text=True)
    if version.returncode != 0:
        print(f"{args.deepmd_python}: cannot import deepmd\n{version.stderr[-1000:]}",
              file=sys.stderr)
        return 2
    dp_version, dp_torch = version.stdout.split()
    neutral = work / "model.dp"
    if args.model:
        convert(args.model, neutral)
        label = str(args.model)
    else:
        md_step.write_dp(args.model_name, args.precision, neutral)
        label = f"{args.model_name} {args.precision} (random parameters)"
    suffix = DEEPMD_SUFFIX[args.deepmd_backend]
    run_dp(args.deepmd_python, ["convert-backend", "model.dp", f"model_deepmd{suffix}"], work,
           args.threads)
    for n in sizes:
        coord, cell, atype = tiled(n)
        np.savez(work / f"water_{n}.npz", coord=coord, cell=cell, atype=atype)
    backends = [b for b in args.backends if b in available() and b in md_step.FROZEN]

    variants = [("plain", neutral, work / f"model_deepmd{suffix}")]
    if args.compressed:
        # DeePMD-kit's TensorFlow compress checks the whole input: learning_rate, loss, steps
        script = {"model": load_model(neutral)[2].get("model_def_script"),
                  "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-8,
                                    "decay_steps": 5000},
                  "loss": {"type": "ener"},
                  "training": {"training_data": {"systems": [str(args.training_data)],
                                                 "batch_size": 1}, "numb_steps": 1}}
        (work / "input.json").write_text(json.dumps(script, indent=1))
        dp_c = work / f"model_deepmd_compressed{suffix}"
        try:
            run_dp(args.deepmd_python, [f"--{args.deepmd_backend}", "compress", "-i",
                                        f"model_deepmd{suffix}", "-o", dp_c.name, "-t",
                                        "input.json"], work, args.threads)
        except RuntimeError as err:
            print(f"DeePMD-kit compression: {err}", file=sys.stderr)
            dp_c = None
        pp_c = work / "model_compressed.dp"
        why = (md_step.compress(neutral, pp_c, f"-t {work / 'input.json'}")
               if md_step.compression_available()
               else "polypot/model/compress.py not found")
        if why:
            print(f"polypot compression: {why}", file=sys.stderr)
        if dp_c and not why:
            variants.append(("compressed", pp_c, dp_c))

    here = Path(__file__).resolve()
    md_step_py = here.parent / "md_step.py"
    rows: list[dict] = []

    def log(code: str, variant: str, backend: str):
        def record(n: int, res: dict) -> None:
            rows.append({"code": code, "variant": variant, "backend": backend, "natoms": n,
                         **{k: res.get(k, "") for k in md_step.FIELDS[5:-2]},
                         "note": res.get("note", "")})
            extra = f"{res['ms']} ms" if "ms" in res else res.get("note", "")
            print(f"  {code} {variant} {backend} {n}: {res['status']} {extra}", file=sys.stderr,
                  flush=True)
        return record

    print(f"# DeePMD-kit {dp_version} (torch {dp_torch}, {args.deepmd_python}) vs polypot; model "
          f"{label}; DeepPot.eval ms per call (neighbour list + energy, forces, virial), median "
          f"of <= {args.repeats} after {args.warmup} warm-up, {args.threads} threads; "
          f"files in {work}", flush=True)
    for variant, pp_file, dp_file in variants:
        def dp_cmd(n, dp_file=dp_file):
            return [args.deepmd_python, str(here), "--deepmd-child", str(dp_file),
                    str(work / f"water_{n}.npz"), *md_step.child_args(args)]

        frozen = {b: pp_file.with_suffix(md_step.FROZEN[b]) for b in backends}
        for b in backends:
            convert(pp_file, frozen[b])

        def pp_cmd(n, b, frozen=frozen):
            return [sys.executable, str(md_step_py), "--child", str(frozen[b]), str(n),
                    *md_step.child_args(args)]

        if args.interleave:
            b = backends[0]
            dp_res, pp_one, ratios = {}, {}, {}
            for n in sizes:
                dp_res[n], pp_one[n], ratios[n] = interleaved(dp_cmd(n), pp_cmd(n, b),
                                                              args.interleave, args.threads)
                log("deepmd", variant, args.deepmd_backend)(n, dp_res[n])
                log("polypot", variant, b)(n, pp_one[n])
            print(f"\n## {variant} model (calls interleaved)\n")
            print("\n".join(comparison_table(dp_res, {b: pp_one}, sizes, ratios)))
            continue
        # rounds alternate the two codes, so that a machine whose speed drifts (shared CPUs)
        # slows both alike; each round's ratio is printed
        dp_runs, pp_runs = [], []
        for _ in range(max(1, args.rounds)):
            dp_runs.append(md_step.sweep(dp_cmd, sizes, args,
                                         log("deepmd", variant, args.deepmd_backend)))
            pp_runs.append({b: md_step.sweep(lambda n, b=b: pp_cmd(n, b), sizes, args,
                                             log("polypot", variant, b)) for b in backends})
        dp_res = {n: median_result(dp_runs, n) for n in sizes}
        pp_res = {b: {n: median_result([r[b] for r in pp_runs], n) for n in sizes}
                  for b in backends}
        ratios = ({n: round_ratios(dp_runs, pp_runs, n) for n in sizes}
                  if args.rounds > 1 else None)
        print(f"\n## {variant} model\n")
        print("\n".join(comparison_table(dp_res, pp_res, sizes, ratios)))
    if args.compressed and len(variants) == 1:
        print("\n(compressed: not compared, see the messages above)")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nCSV: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
