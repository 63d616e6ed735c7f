"""Progress of long steps (scoring, probes, sampling) on stderr, readable in a terminal and in a log.

In a terminal one line is redrawn in place; in a file or a pipe, where carriage returns pile up
into one unreadable line, a whole line is written at every tenth of the work (and at the end).
"""

from __future__ import annotations

import sys
import time


class Progress:
    """`Progress(name, total)`, then `advance(n)` as work is done and `close()` at the end.

    A `name` of None makes every call a no-op, so callers need no `if progress:` of their own.
    """

    def __init__(self, name: str | None, total: int, unit: str = "", stream=None):
        self.name = name
        self.total = max(int(total), 0)
        self.unit = f" {unit}" if unit else ""
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._next_tenth = 1
        self._last_draw = 0.0
        self._closed = name is None

    def _line(self) -> str:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = time.perf_counter() - self.started
        left = (f", about {elapsed / self.done * (self.total - self.done):.0f} s left"
                if 0 < self.done < self.total else "")
        return f"{self.name}: {self.done}/{self.total}{self.unit}{share}, {elapsed:.0f} s{left}"

    def advance(self, n: int = 1) -> None:
        if self._closed:
            return
        self.done += n
        if self.interactive:
            now = time.perf_counter()
            if now - self._last_draw >= 0.2 or self.done >= self.total:
                self.stream.write("\r" + self._line())
                self.stream.flush()
                self._last_draw = now
        elif self.total and self.done * 10 >= self._next_tenth * self.total and self.done < self.total:
            self.stream.write(self._line() + "\n")
            self.stream.flush()
            self._next_tenth = self.done * 10 // self.total + 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stream.write(("\r" if self.interactive else "") + self._line() + "\n")
        self.stream.flush()
