"""Plot of ``bench/md_step.py`` rows: ms per step against atoms, log-log, one panel per precision.

    .venv/bin/python bench/plot.py md_step.csv md_step.png      # re-plot a saved CSV
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def line_label(row: dict) -> str:
    """``backend model`` plus `` compressed`` for compressed models."""
    compressed = str(row.get("compressed", "")).lower() in ("true", "1", "yes")
    return f"{row['backend']} {row['model']}" + (" compressed" if compressed else "")


def plot_ms_per_step(rows: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Write the PNG; rows whose status is not ``ok`` are left out. None when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = [r for r in rows if r.get("status") == "ok" and r.get("ms") not in (None, "")]
    if not ok:
        return None
    precisions = sorted({r["precision"] for r in ok}, reverse=True)  # float64 first
    fig, axes = plt.subplots(1, len(precisions), figsize=(6.5 * len(precisions), 5),
                             squeeze=False, sharey=True)
    for ax, prec in zip(axes[0], precisions, strict=True):
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in ok:
            if r["precision"] == prec:
                lines.setdefault(line_label(r), []).append((int(r["natoms"]), float(r["ms"])))
        colours: dict[str, str] = {}  # a compressed line takes its plain line's colour, dashed
        for label, points in sorted(lines.items()):
            points.sort()
            base = label.removesuffix(" compressed")
            colour = colours.setdefault(base, f"C{len(colours) % 10}")
            style = "--" if label != base else "-"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o",
                    color=colour, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({p[0] for points in lines.values() for p in points})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("atoms")
        ax.set_title(prec)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("ms per MD step (neighbour list + energy, forces, virial)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = plot_ms_per_step(rows, sys.argv[2])
    print(out or "nothing to plot (no row with status ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
