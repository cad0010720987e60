"""`cpcl completion SHELL`: a completion script for the shell, made from the command line's own parser (shtab)."""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "completion", help="print a shell completion script (bash: cpcl completion bash > "
                           "~/.local/share/bash-completion/completions/cpcl)")
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(func=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    import shtab

    from cpcl.cli import build_parser

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0
