"""``make dev`` keeps one TOKEN_SECRET under ``./var``: a restarted web process accepts the
stream tokens the previous one handed out."""

import stat
from pathlib import Path

from app.settings import MIN_TOKEN_SECRET_LENGTH
from app.tokens import TokenService
from scripts.dev import TOKEN_SECRET_FILE, development_token_secret


def test_dev_token_secret_is_created_once_and_kept_for_the_owner_only(tmp_path: Path) -> None:
    first = development_token_secret(tmp_path)
    second = development_token_secret(tmp_path)

    assert first == second
    assert len(first) >= MIN_TOKEN_SECRET_LENGTH
    mode = (tmp_path / TOKEN_SECRET_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_dev_token_secret_replaces_one_too_short_to_sign_with(tmp_path: Path) -> None:
    (tmp_path / TOKEN_SECRET_FILE).write_text("short\n")

    secret = development_token_secret(tmp_path)

    assert len(secret) >= MIN_TOKEN_SECRET_LENGTH
    assert (tmp_path / TOKEN_SECRET_FILE).read_text().strip() == secret


def test_dev_token_secret_keeps_stream_tokens_valid_across_a_restart(tmp_path: Path) -> None:
    before_restart = TokenService(development_token_secret(tmp_path))
    issued = before_restart.issue(user_id="developer", task_id="t-1", ttl=60)

    after_restart = TokenService(development_token_secret(tmp_path))

    assert after_restart.decode(issued.token).task_id == "t-1"
