"""The ``laspa`` command's entry point, light on purpose.

It takes Ctrl-C and SIGTERM over before anything heavy (typer, torch, diffusers) is
imported, so that a signal at any moment, start-up included, ends the command with one
line on stderr and exit status 128 + the signal's number (130, 143). Temporary files
are removed on the way out and an earlier output file is left as it was.
"""

from __future__ import annotations

from .interrupts import Interrupted, exit_interrupted, signals_as_exceptions

__all__ = ["Interrupted", "exit_interrupted", "main", "signals_as_exceptions"]


def main(argv: list[str] | None = None) -> None:
    """``laspa``: signals are ours from here; the CLI is imported inside."""
    try:
        with signals_as_exceptions():
            from .cli import main as run_cli

            run_cli(argv)
    except Interrupted as stop:
        exit_interrupted(stop)


if __name__ == "__main__":
    main()
