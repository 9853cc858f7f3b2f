"""A one-line progress bar redrawn in place with ``\\r`` (no dependency, off when not a tty)."""

from __future__ import annotations

from typing import TextIO

WIDTH = 24


class ProgressBar:
    """Draws ``label [#####.....] detail`` on one line of ``stream``; ``clear`` wipes it so a
    table row can be printed in its place. Does nothing when disabled."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self.enabled = enabled
        self._shown = 0

    def draw(self, label: str, fraction: float, detail: str) -> None:
        if not self.enabled:
            return
        filled = round(WIDTH * min(max(fraction, 0.0), 1.0))
        line = f"{label} [{'#' * filled}{'.' * (WIDTH - filled)}] {detail}"
        # NOTE: pad over the previous line's tail, which a shorter line would leave behind.
        self._stream.write("\r" + line.ljust(self._shown))
        self._stream.flush()
        self._shown = len(line)

    def clear(self) -> None:
        if self.enabled and self._shown:
            self._stream.write("\r" + " " * self._shown + "\r")
            self._stream.flush()
            self._shown = 0
