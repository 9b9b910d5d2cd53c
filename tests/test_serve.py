"""`expertbot serve` as a process, `expertbot status`, and the Slack settings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from base.database import make_engine
from base.migrations import migrate_all
from bot.settings import load_settings
from tests.helpers import run_cli
from training.feedback.records import AnswerRecord, CuratedKind, RatingKind
from training.feedback.store import FeedbackStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serve_without_slack_starts_says_so_and_stops_cleanly_on_sigterm(
    handbook_data_dir: Path, tiny_phi3: Path
) -> None:
    """Slack not configured, Teams in anonymous mode (which it says loudly)."""
    port = free_port()
    env = os.environ | {
        "EXPERTBOT_MODEL__BASE": str(tiny_phi3),
        "HF_HUB_OFFLINE": "1",
        "EXPERTBOT_TEAMS__ANONYMOUS": "true",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                status, _ = get(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve never answered /healthz"
                time.sleep(0.3)
        assert status == 200
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and json.loads(body)["checks"]["index"] == "172 chunks"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/slack/events", data=b"{}", method="POST"
        )
        try:
            urllib.request.urlopen(request, timeout=5)
            raise AssertionError("Slack events must not be served without Slack configured")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/messages",
            data=b"[]",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=5)
            raise AssertionError("a list is not an activity")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Slack: not configured (set SLACK_BOT_TOKEN" in stderr
    assert "Teams: ANONYMOUS at /api/messages (no token checked)" in stderr
    assert "WARNING: Teams accepts UNAUTHENTICATED requests" in stderr
    assert f"serving on http://127.0.0.1:{port}" in stderr


def test_serve_refuses_a_model_that_cannot_load_with_one_clear_line(
    handbook_data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "serve", "--port", "0", env={"EXPERTBOT_MODEL__BASE": str(tmp_path / "nothing")}
    )
    assert result.exit_code == 1
    assert "error:" in result.output and "nothing" in result.output


def test_status_json_shows_index_and_feedback_counts(handbook_data_dir: Path) -> None:
    store = FeedbackStore(make_engine(load_settings().resolved_database_url))
    migrate_all(store.engine)
    store.record(
        AnswerRecord(
            id="a1",
            question="q",
            asker="U1",
            platform="slack",
            where_kind="public",
            channel="C",
            thread="1",
            answer="x",
            abstained=False,
            model="m",
            adapter=None,
        )
    )
    store.rate(
        answer_id="a1", user_id="U1", platform="slack", kind=RatingKind.UP, source="reaction"
    )
    store.rate(
        answer_id="a1", user_id="U2", platform="slack", kind=RatingKind.DOWN, source="button"
    )
    store.curate_answer(
        "a1", embedding=np.ones(4), approved_by="UE", kind=CuratedKind.CORRECTED, text="y"
    )
    store.add_correction(answer_id="a1", user_id="UE", platform="slack", text="y", approved=True)
    result = run_cli("status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["index"]["documents"] == 18 and status["last_sync"]["status"] == "ok"
    assert status["adapter"] is None
    assert status["feedback"] == {
        "answers": 1,
        "up": 1,
        "down": 1,
        "approved": 0,
        "corrections": 1,
        "comments": 0,
    }
    text = run_cli("status").stdout
    assert "Index: 18 documents" in text and "1 corrections" in text


def test_slack_settings_from_slacks_own_variables_and_comma_lists() -> None:
    settings = load_settings(
        environ={
            "SLACK_BOT_TOKEN": "xoxb-secret-token",
            "SLACK_SIGNING_SECRET": "shh",
            "EXPERTBOT_SLACK__EXPERTS": "U01, U02",
            "EXPERTBOT_SLACK__ADMINS": '["U09"]',
        }
    )
    slack = settings.slack
    assert slack.configured and not slack.socket_mode
    assert slack.experts == ["U01", "U02"] and slack.admins == ["U09"]
    assert "xoxb-secret-token" not in repr(settings) and "shh" not in repr(settings)
    socket_mode = load_settings(environ={"SLACK_BOT_TOKEN": "x", "SLACK_APP_TOKEN": "xapp-1"})
    assert socket_mode.slack.configured and socket_mode.slack.socket_mode
    assert not load_settings(environ={"SLACK_BOT_TOKEN": "x"}).slack.configured


def test_teams_settings_need_the_whole_app_registration_and_take_comma_lists() -> None:
    env = {
        "EXPERTBOT_TEAMS__CLIENT_ID": "app",
        "EXPERTBOT_TEAMS__EXPERTS": "aad-1, aad-2",
        "EXPERTBOT_TEAMS__ADMINS": "aad-3",
    }
    try:
        load_settings(environ=env)
        raise AssertionError("a client id without its secret and tenant must be refused")
    except Exception as exc:
        assert "client_secret" in str(exc) and "__TENANT_ID" in str(exc)
    settings = load_settings(
        environ=env
        | {"EXPERTBOT_TEAMS__CLIENT_SECRET": "hunter2-x", "EXPERTBOT_TEAMS__TENANT_ID": "t"}
    )
    teams = settings.teams
    assert teams.configured and not teams.anonymous
    assert teams.experts == ["aad-1", "aad-2"] and teams.admins == ["aad-3"]
    assert "hunter2" not in repr(settings)  # a secret never shows in logs or reprs
    assert not load_settings(environ={}).teams.configured
