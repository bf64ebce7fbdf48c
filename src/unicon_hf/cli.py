"""The `unicon` command line.

Each subcommand lives in its own module under `unicon_hf.commands` and exposes
`register(subparsers)`, which adds its parser and sets `func` to the function that runs it.
Discovery by module keeps this file unchanged when a subcommand is added.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from .errors import UserInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unicon",
        description="UNICON: grow a 3D medical foundation model task by task without forgetting.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserInputError as error:
        # Bad input from the user: a clear one-line message and exit code 2, no traceback.
        print(f"unicon {args.command}: error: {error}", file=sys.stderr)
        return 2




if __name__ == "__main__":
    sys.exit(main())
