"""The bottom of a terminal while an answer streams: its unfinished line, and a progress bar.

The answer goes to stdout, each line once, as soon as it is finished (a newline arrived); the
line still being written and the progress bar under it are drawn on stderr and redrawn in place
at every change (erased with cursor-up and erase-below, the way rich's live displays work). So
a person sees the text grow word by word above a bar, while stdout receives exactly the answer.

A line longer than the screen shows its tail while it grows; all of it reaches stdout when it
ends. Control characters in the answer are shown as ``�`` here (stdout gets them as they are).
"""

from __future__ import annotations

import re
from typing import IO, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
BAR_WIDTH = 24


def _printable(text: str) -> str:
    return _CONTROL.sub("\ufffd", text.expandtabs())


class LiveRegion:
    def __init__(self, out: TextIO, console: Console) -> None:
        self.out = out
        self.console = console
        self.partial = ""
        self.progress = 0
        self.label = ""
        self.lines_written = 0
        self._rows = 0

    @property
    def _err(self) -> IO[str]:
        return self.console.file

    def write(self, text: str) -> None:
        """Append answer text: finished lines go to stdout, the rest stays in the region."""
        *finished, self.partial = (self.partial + text).split("\n")
        if finished:
            self._emit(self._erase())
            self.out.write("\n".join(finished) + "\n")
            self.out.flush()
            self.lines_written += len(finished)
        self._emit(self._erase() + self._draw())

    def discard_partial(self) -> None:
        """Drop the unfinished line (a reset replaces it)."""
        self.partial = ""
        self._emit(self._erase() + self._draw())

    def set_progress(self, progress: int, label: str) -> None:
        if (progress, label) != (self.progress, self.label):
            self.progress, self.label = progress, label
            self._emit(self._erase() + self._draw())

    def note(self, message: Text) -> None:
        """A line of information on stderr, above the region."""
        self._emit(self._erase())
        self.console.print(message, soft_wrap=True)
        self._emit(self._draw())

    def hide(self) -> None:
        """Take the region off the screen (before a prompt); the next change draws it again."""
        self._emit(self._erase())

    def close(self) -> None:
        """Erase the region and end the answer on stdout with its unfinished line."""
        self._emit(self._erase())
        if self.partial:
            self.out.write(self.partial + "\n")
            self.out.flush()
            self.partial = ""

    def _emit(self, frame: str) -> None:
        """One write, so that the terminal never shows a frame half drawn."""
        if frame:
            self._err.write(frame)
            self._err.flush()

    def _erase(self) -> str:
        if not self._rows:
            return ""
        up, self._rows = self._rows - 1, 0
        return (f"\x1b[{up}A" if up else "") + "\r\x1b[J"

    def _draw(self) -> str:
        width = max(20, self.console.width)
        height = max(4, self.console.height)
        shown = _printable(self.partial)
        room = (height - 2) * width
        if cell_len(shown) > room:
            shown = "…" + shown[-(room - 1) :]
            while cell_len(shown) > room:
                shown = "…" + shown[2:]
        self._rows = max(1, -(-cell_len(shown) // width)) + 1
        return shown + "\n" + self._bar(width - 1)

    def _bar(self, width: int) -> str:
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            ProgressBar(total=100, completed=self.progress, width=min(BAR_WIDTH, width // 3)),
            Text(f"{self.progress:>3}%"),
            Text(self.label, style="dim", no_wrap=True, overflow="ellipsis"),
        )
        with self.console.capture() as capture:
            self.console.print(grid, width=width, end="", no_wrap=True, overflow="crop")
        return capture.get().rstrip("\n")
