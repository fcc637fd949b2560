"""``.env.example`` lists every variable the processes read, and nothing they ignore."""

import re
from pathlib import Path

from app.settings import WebSettings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
#: Read by the Procfile or ``make dev``, not by a settings class.
PROCESS_VARIABLES = {
    "PORT",
    "WEB_HOST",
    "WEB_CONCURRENCY",
    "BEAT_SCHEDULE_FILE",
    "FLOWER_BASIC_AUTH",
    "CLEANUP_METRICS_PORT",
}


def test_env_example_lists_every_setting() -> None:
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    fields = {name.upper() for name in {*WebSettings.model_fields, *WorkerSettings.model_fields}}

    assert fields - listed == set(), "settings missing from .env.example"
    assert listed - fields - PROCESS_VARIABLES == set(), ".env.example names unknown variables"
