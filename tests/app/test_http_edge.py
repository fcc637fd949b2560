"""The Procfile's web line and the web's settings agree on the HTTP edge's limits.

The limits uvicorn enforces itself are passed on its command line from the environment, with
defaults in the Procfile; the others the edge protocol reads from the settings. Both sets of
defaults are documented once, so they must be the same numbers.
"""

import re
from pathlib import Path

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from app.http_edge import GuardedHttpToolsProtocol
from app.settings import WebSettings

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


def _web_line() -> str:
    match = re.search(r"^web:\s*(.+)$", PROCFILE.read_text(), re.MULTILINE)
    assert match is not None
    return match[1]


def test_procfile_web_passes_each_uvicorn_limit_with_the_settings_default() -> None:
    line = _web_line()
    defaults = WebSettings.model_fields

    for flag, variable in [
        ("--timeout-keep-alive", "HTTP_KEEP_ALIVE_TIMEOUT"),
        ("--limit-concurrency", "HTTP_MAX_CONNECTIONS"),
        ("--backlog", "HTTP_BACKLOG"),
    ]:
        match = re.search(rf"{flag} \$\{{{variable}:-(\d+)\}}", line)
        assert match is not None, f"the Procfile's web line does not pass {flag} from {variable}"
        assert int(match[1]) == defaults[variable.lower()].default, variable


def test_procfile_web_runs_the_guarded_protocol() -> None:
    match = re.search(r"--http (\S+)", _web_line())

    assert match is not None
    # uvicorn imports a --http value that is not one of its own names (Config.load).
    assert match[1] not in HTTP_PROTOCOLS
    assert import_from_string(match[1]) is GuardedHttpToolsProtocol
