"""One status line with the elapsed time, for the long waits (a task starting, a service draining).

On a terminal the line is rewritten in place (``\\r`` and erase-line); elsewhere (CI logs, a pipe) a
line is printed only when the message changes, so a log is not flooded. Log lines printed meanwhile go
through :meth:`Progress.clear` first. No dependency: a spinner library would add nothing a plain line
does not.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ERASE = "\r\033[K"


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.start = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last: str | None = None
        self.shown = False

    def update(self, message: str) -> None:
        line = f"{message} ({elapsed(self.clock() - self.start)})"
        if self.tty:
            self.stream.write(ERASE + line)
            self.shown = True
        elif message != self.last:
            self.stream.write(line + "\n")
        self.last = message
        self.stream.flush()

    def clear(self) -> None:
        """Erase the status line before other output (a terminal only)."""
        if self.tty and self.shown:
            self.stream.write(ERASE)
            self.stream.flush()
            self.shown = False

    def done(self, message: str) -> None:
        """The last line, kept (elsewhere than a terminal, only when it says something new)."""
        self.clear()
        if self.tty or message != self.last:
            self.stream.write(f"{message} ({elapsed(self.clock() - self.start)})\n")
        self.stream.flush()
