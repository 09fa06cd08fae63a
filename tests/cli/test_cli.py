"""The ``polypot`` command line: --help, --version, show, demo."""

from __future__ import annotations

import json
import subprocess
import sys

from reference_data import FIXTURES

from polypot import __version__
from polypot.cli.main import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "polypot.cli.main", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for cmd in ("show", "demo"):
        assert cmd in out


def test_show_fixture(capsys):
    assert main(["show", "--json", str(FIXTURES / "se_atten_l2" / "model.dp")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["type_map"] == ["O", "H"]
    assert info["descriptor"] == "dpa1"
    assert info["rcut"] == 6.0 and info["sel"] == 120
    assert info["precision"] == "float64"
    assert info["parameters"] > 10_000


def test_show_bad_file_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "x.dp"
    bad.write_bytes(b"nope")
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.dp" in err[0] and "Traceback" not in err[0]
