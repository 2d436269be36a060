"""Ctrl-C and SIGTERM as one line on stderr and exit status 128 + the signal's number
(130, 143), for the ``laspa`` command (laspa.console takes them over at start-up, the
CLI keeps them while a command runs). Temporary files are removed on the way out and an
earlier output file is left as it was."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: what the one line says for each signal taken over
SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Interrupted(BaseException):
    """A signal ended the command. A BaseException, so that neither ``except Exception``
    in a library nor click's own Ctrl-C handling (a blank line, then "Aborted!") takes it
    for something else."""

    def __init__(self, signum: int):
        super().__init__(SIGNALS.get(signum, f"signal {signum}"))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame) -> None:
    # further signals are ignored, so that the first one's unwinding (removing temporary
    # files, reporting) runs to its end instead of being cut short by a second Ctrl-C
    for other in SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (a signal the
    process was started to ignore, as a background job ignores Ctrl-C, stays ignored).
    When the block ends without a signal the previous handlers come back: the CLI also
    runs inside test processes. After one, signals stay ignored while the command exits."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupted)
    interrupted = False
    try:
        yield
    except Interrupted:
        interrupted = True
        raise
    finally:
        if not interrupted:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def exit_interrupted(stop: Interrupted) -> None:
    print(f"laspa: {stop}", file=sys.stderr)
    sys.exit(stop.exit_code)
