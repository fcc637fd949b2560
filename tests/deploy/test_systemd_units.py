"""The systemd units in deploy/systemd: valid for ``systemd-analyze verify`` once installed (here,
into this checkout instead of /opt/agent-service), and keeping the promises the README makes of
them: restarted always, configured from one environment file, stopped with a warm shutdown
that outlasts the longest soft time limit, hardened."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from worker.settings import WorkerSettings
from worker.tasks.agent_tasks import OUTCOME_GRACE

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALL_PREFIX = "/opt/agent-service"
SERVICES = [
    "agent-service-web.service",
    "agent-service-worker@.service",
    "agent-service-cleanup.service",
    "agent-service-beat.service",
]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _service(name: str) -> dict[str, list[str]]:
    """The [Service] section's settings, each with every value it was given."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is missing (.ci/run installs systemd)"
)
def test_units_pass_systemd_analyze_verify_when_installed(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    installed = []
    for unit in [*UNITS.glob("*.service"), *UNITS.glob("*.target")]:
        text = unit.read_text().replace(INSTALL_PREFIX, str(ROOT))
        name = unit.name.replace("@.service", "@9101.service")  # an instance of the template
        (tmp_path / name).write_text(text)
        installed.append(f"./{name}")

    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *installed],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == "", "systemd-analyze warned:\n" + verified.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_restarts_reads_the_environment_file_and_is_hardened(name: str) -> None:
    service = _service(name)

    assert service["Restart"] == ["always"]
    assert service["EnvironmentFile"] == ["/etc/agent-service/env"]
    assert service["User"] == ["agent-service"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == ["/var/lib/agent-service"]
    assert service["CapabilityBoundingSet"] == [""]


@pytest.mark.parametrize("name", ["agent-service-worker@.service", "agent-service-cleanup.service"])
def test_workers_stop_warm_and_outlast_the_longest_soft_time_limit(name: str) -> None:
    service = _service(name)
    defaults = WorkerSettings(_env_file=None)
    # A running task ends within its soft limit, plus the time its outcome may take to store.
    longest = defaults.celery_task_soft_time_limit + OUTCOME_GRACE + 2 * defaults.redis_outage_limit

    assert service["KillMode"] == ["mixed"]  # SIGTERM to Celery's main process only
    assert int(service["TimeoutStopSec"][0]) > longest


def test_the_worker_template_names_each_instance_by_its_metrics_port() -> None:
    (command,) = _service("agent-service-worker@.service")["ExecStart"]

    assert "WORKER_METRICS_PORT=%i" in command
    assert "-n agents-%i@%H" in command
    assert "--pool threads" in command


def test_the_environment_file_template_overrides_nothing_the_units_set() -> None:
    """systemd lets EnvironmentFile= override Environment=: a template that set TEMP_DIR or
    PORT would undo the units' production values."""
    template = (UNITS / "env.example").read_text()
    offered = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", template, re.M))
    set_by_units = {
        assignment.partition("=")[0]
        for name in SERVICES
        for line in _service(name).get("Environment", [])
        for assignment in line.split()
    }
    # and the one each unit's command line sets (the workers' metrics ports)
    set_by_units |= {"WORKER_METRICS_PORT"}

    assert {"ENVIRONMENT", "API_KEYS", "TOKEN_SECRET", "DATABASE_URL"} <= offered
    assert offered & set_by_units == set()
