"""`petseg COMMAND ...`: find the command's module, parse, load params.yaml, run; one line on a user's mistake.

A command module has `add(subparsers)` that adds its parser(s), each with a
`handler(args, params)`. Only the module of the command being run is imported
(by name, from COMMANDS), so editing one command's module changes no other
command's code: the DVC stages (dvc.yaml) depend on main.py and their own
command's module only. `petseg --help` imports them all to list them.

A user's mistake (PetsegError) ends with one line on stderr and a non-zero
exit; anything else is a bug and keeps its traceback. Heavy imports
(TensorFlow, Great Expectations) happen inside the handlers so that
`petseg --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import DEFAULT_PARAMS_FILE, load_params

DESCRIPTION = "pet segmentation: a DVC and Kubeflow pipeline from the Oxford-IIIT Pet dataset to TF Serving"

# command -> the petseg.cli module that adds its parser, in the order --help lists them
COMMANDS: dict[str, str] = {
    "download": "download",
    "validate": "validate",
    "preprocess": "preprocess",
    "train": "train",
    "evaluate": "evaluate",
    "push": "push",
    "rollback": "rollback",
    "mirror": "mirror",
    "serve": "serving",
    "predict": "serving",
    "pipeline": "kubeflow",
}


def command_module(command: str) -> str:
    """The module that runs `petseg <command>` (scripts/sync_dvc_deps.py lists its import closure as a stage's deps)."""
    return f"petseg.cli.{COMMANDS[command]}"


def _quiet_libraries() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def modules_for(argv: list[str]) -> list[str]:
    """The command modules to import: the one of the command `argv` names, or all of them (help, a typo)."""
    chosen = COMMANDS.get(argv[0]) if argv else None
    return [chosen] if chosen else list(dict.fromkeys(COMMANDS.values()))


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    """The `petseg` parser with the commands of `modules` (default: every command)."""
    parser = argparse.ArgumentParser(prog="petseg", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules if modules is not None else list(dict.fromkeys(COMMANDS.values())):
        importlib.import_module(f"petseg.cli.{name}").add(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--params", type=Path, default=DEFAULT_PARAMS_FILE, help="parameters file (default: params.yaml)"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(modules_for(argv)).parse_args(argv)
    _quiet_libraries()
    if hasattr(signal, "SIGXFSZ"):  # past a file size limit (ulimit -f): an EFBIG error, one line, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        params = load_params(args.params)
        return args.handler(args, params) or 0
    except PetsegError as exc:
        print(f"petseg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"petseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
