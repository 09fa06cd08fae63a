"""``polypot ipi CONFIG.json``: an i-PI client (like DeePMD-kit's ``dp_ipi``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def run(args: argparse.Namespace) -> int:
    from ..md.ipi import load_config, run_driver

    config = load_config(args.config)
    try:
        run_driver(config)
    except (ConnectionError, TimeoutError) as err:
        print(f"polypot ipi: error: {err}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ipi", help="serve energies, forces and virials to an i-PI server (like dp_ipi)",
        description="Connect to a running i-PI server and compute energies, forces and virials "
        "with a model until i-PI exits. CONFIG.json holds dp_ipi's keys: graph_file, "
        "coord_file, atom_type, use_unix, port, host, verbose (and polypot's backend, "
        "timeout).")
    p.add_argument("config", help="JSON config file (dp_ipi's keys)")
    p.set_defaults(func=run)
