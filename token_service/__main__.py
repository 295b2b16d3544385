"""Command line: ``python -m token_service dev [--port 8000] [--run-dir run]`` and ``check-config``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from token_service.devserver import check_config, port_number, run_dev


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m token_service", description="Persona token service.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = commands.add_parser("dev", help="serve on 127.0.0.1 for local development (one worker, embedded stores)")
    dev.add_argument("--port", type=port_number, default=8000, help="TCP port on 127.0.0.1 (default 8000)")
    dev.add_argument("--run-dir", type=Path, default=Path("run"),
                     help="where the generated admin key is written (default ./run)")
    commands.add_parser("check-config", help="load the settings from the environment; print ok or the error (exit 2)")
    args = parser.parse_args(argv)
    if args.command == "dev":
        return run_dev(args.port, args.run_dir, os.environ)
    return check_config(os.environ)


if __name__ == "__main__":
    sys.exit(main())
