"""``LiveRegion``: what a terminal shows while an answer streams, read back from a terminal
emulator (pyte), and what stdout receives."""

import io

import pyte
from rich.console import Console

from cli.terminal import LiveRegion

COLUMNS, LINES = 40, 12


class Terminal:
    """stdout and stderr sharing one emulated screen, as they do in a terminal."""

    def __init__(self) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.Stream(self.screen)
        self.stdout_text = ""
        terminal = self

        class Pipe(io.StringIO):
            def __init__(self, *, is_stdout: bool) -> None:
                super().__init__()
                self.is_stdout = is_stdout

            def write(self, text: str) -> int:
                if self.is_stdout:
                    terminal.stdout_text += text
                # A terminal's line discipline turns \n into \r\n.
                terminal.stream.feed(text.replace("\n", "\r\n"))
                return len(text)

        self.stdout = Pipe(is_stdout=True)
        self.stderr = Pipe(is_stdout=False)
        self.console = Console(
            file=self.stderr, width=COLUMNS, height=LINES, force_terminal=True, color_system=None
        )

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines()).rstrip()


def test_live_region_shows_the_growing_line_above_the_bar_and_each_line_once() -> None:
    terminal = Terminal()
    region = LiveRegion(terminal.stdout, terminal.console)

    for word in ["First ", "line\nSecond", " line ", "growing"]:
        region.write(word)
    region.set_progress(40, "running · generating")

    assert terminal.lines()[:3] == ["First line", "Second line growing", terminal.lines()[2]]
    assert "40% running · gen" in terminal.lines()[2]
    assert terminal.stdout_text == "First line\n"

    region.close()

    assert terminal.text() == "First line\nSecond line growing"
    assert terminal.stdout_text == "First line\nSecond line growing\n"


def test_live_region_redraws_a_line_that_wraps_without_leaving_copies() -> None:
    terminal = Terminal()
    region = LiveRegion(terminal.stdout, terminal.console)
    words = [f"word{i:02d} " for i in range(12)]  # 84 columns: three rows of 40

    for word in words:
        region.write(word)
        region.set_progress(len(word), "generating")

    shown = "".join(terminal.lines()[:3])
    assert shown == "".join(words).rstrip()
    assert "%" in terminal.lines()[3]
    assert terminal.lines()[4:] == [""] * (LINES - 4)
    assert terminal.stdout_text == ""


def test_live_region_shows_the_tail_of_a_line_taller_than_the_screen() -> None:
    terminal = Terminal()
    region = LiveRegion(terminal.stdout, terminal.console)
    line = "".join(f"{i:04d}" for i in range(400))  # 1600 columns: 40 rows

    region.write(line)

    lines = terminal.lines()
    assert lines[0].startswith("…")
    assert "".join(lines[: LINES - 2]).endswith(line[-100:])
    region.close()
    assert terminal.stdout_text == line + "\n"


def test_live_region_hides_for_a_prompt_and_comes_back() -> None:
    terminal = Terminal()
    region = LiveRegion(terminal.stdout, terminal.console)
    region.write("half a line")

    region.hide()

    assert terminal.text() == ""
    region.set_progress(10, "generating")
    assert terminal.lines()[0] == "half a line"


def test_live_region_shows_control_characters_harmlessly() -> None:
    terminal = Terminal()
    region = LiveRegion(terminal.stdout, terminal.console)

    region.write("bell\x07 escape\x1b[2J kept")

    assert terminal.lines()[0] == "bell\ufffd escape\ufffd[2J kept"
