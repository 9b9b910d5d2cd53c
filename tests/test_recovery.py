"""`expertbot serve` killed or stopped while it answers: the question is answered exactly once,
by the next process. The real server as a subprocess (tiny Phi-3, the handbook index, SQLite),
signed Slack events, and a local fake of Slack's Web API that can keep a call waiting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import aiohttp
from slack_sdk.signature import SignatureVerifier

from tests.helpers import PASSWORD_Q, SECRET, SLACK_EMPLOYEE, envelope, mention
from tests.slack_fake import Call, FakeSlack
from tests.test_serve import free_port

CHANNEL = "CPUBLIC"
# Short leases so that a test waits seconds, not the default 30 s, for a dead replica's.
FAST_LEASES = {
    "EXPERTBOT_DELIVERY__LEASE_S": "4",
    "EXPERTBOT_DELIVERY__RENEW_S": "1",
    "EXPERTBOT_DELIVERY__SCAN_S": "1",
}


class Serve:
    """One `expertbot serve` process talking to `slack`."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    async def start(cls, slack: FakeSlack, model: Path, **env: str) -> Self:
        port = free_port()
        environ = os.environ | {
            "HF_HUB_OFFLINE": "1",
            "EXPERTBOT_MODEL__BASE": str(model),
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SECRET,
            "EXPERTBOT_SLACK__API_URL": slack.api_url,
            "EXPERTBOT_SLACK__UPDATE_INTERVAL_S": "0.1",
            "EXPERTBOT_SCHEDULE__SYNC": "",
            "EXPERTBOT_SCHEDULE__TRAIN": "",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
            env=environ | FAST_LEASES | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = cls(proc, port)
        deadline = time.monotonic() + 180
        while (await server.get("/healthz"))[0] != 200:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "serve never answered /healthz"
            await asyncio.sleep(0.3)
        return server

    async def get(self, path: str) -> tuple[int, Any]:
        try:
            async with aiohttp.ClientSession() as session, session.get(self.url + path) as r:
                return r.status, await r.json()
        except aiohttp.ClientConnectionError:
            return 0, None

    async def ask(self, ts: str, event_id: str) -> int:
        body = json.dumps(
            envelope(mention(PASSWORD_Q, channel=CHANNEL, user=SLACK_EMPLOYEE, ts=ts), event_id)
        )
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": str(
                SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
            ),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/slack/events", data=body, headers=headers) as response,
        ):
            return response.status

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate()

    async def stopped(self, timeout: float) -> tuple[int, str]:
        """Wait for the process to exit: (its status, its log)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"serve still running after {timeout} s"
            await asyncio.sleep(0.1)
        return self.proc.returncode, self.proc.communicate()[1]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def finals(slack: FakeSlack) -> list[Call]:
    """Every message that shows a finished answer (its footer: sources, buttons)."""
    return [
        c
        for c in slack.calls
        if c.method in ("chat.stopStream", "chat.update", "chat.postMessage")
        and c.body.get("blocks")
    ]


async def answered_once(slack: FakeSlack, *, within: float) -> float:
    """Wait for the answer; then make sure no second one follows. Returns the wait."""
    started = time.monotonic()
    while not finals(slack):
        assert time.monotonic() - started < within, f"no answer within {within} s"
        await asyncio.sleep(0.1)
    waited = time.monotonic() - started
    await asyncio.sleep(3)  # three scans: no replica answers it again
    assert len(finals(slack)) == 1, [c.method for c in finals(slack)]
    return waited


async def test_killed_after_its_status_showed_a_question_is_answered_once_by_the_next_start(
    handbook_data_dir: Path, tiny_phi3: Path
) -> None:
    async with FakeSlack() as slack:
        slack.hold("chat.startStream")  # the answer is written, never shown
        first = await Serve.start(slack, tiny_phi3)
        try:
            assert await first.ask(slack.next_ts(), "EvKill") == 200
            await slack.wait_for("assistant.threads.setStatus")
            await slack.wait_for("chat.startStream")
            first.kill()
        finally:
            first.close()
        slack.release("chat.startStream")
        assert finals(slack) == []
        second = await Serve.start(slack, tiny_phi3)
        try:
            await answered_once(slack, within=60)
            assert len(slack.calls_to("chat.startStream")) == 2  # the killed try, this one
        finally:
            second.close()


async def test_sigterm_lets_an_answer_in_flight_finish_and_turns_not_ready_at_once(
    handbook_data_dir: Path, tiny_phi3: Path
) -> None:
    async with FakeSlack() as slack:
        slack.hold("chat.startStream")
        server = await Serve.start(slack, tiny_phi3)
        try:
            assert (await server.get("/readyz"))[0] == 200
            assert await server.ask(slack.next_ts(), "EvTerm") == 200
            await slack.wait_for("chat.startStream")
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status, body = await server.get("/readyz")
            while status == 200:  # the signal's handler runs on the loop: a moment
                status, body = await server.get("/readyz")
            assert status == 503 and body["status"] == "stopping"
            await asyncio.sleep(1)
            slack.release("chat.startStream")  # Slack answers; the answer ends
            code, log = await server.stopped(timeout=30)
            assert code == 0, log[-3000:]
            assert time.monotonic() - signalled < 25
            assert len(finals(slack)) == 1
        finally:
            server.close()


async def test_sigterm_releases_an_answer_too_slow_for_the_drain_and_the_next_start_answers_it(
    handbook_data_dir: Path, tiny_phi3: Path
) -> None:
    async with FakeSlack() as slack:
        slack.hold("chat.startStream")
        first = await Serve.start(slack, tiny_phi3, EXPERTBOT_SERVER__DRAIN_S="1")
        try:
            assert await first.ask(slack.next_ts(), "EvDrain") == 200
            await slack.wait_for("chat.startStream")
            first.proc.send_signal(signal.SIGTERM)
            code, log = await first.stopped(timeout=20)
            assert code == 0, log[-3000:]
            assert "delivery.released" in log
        finally:
            first.close()
        slack.release("chat.startStream")
        started = time.monotonic()
        second = await Serve.start(slack, tiny_phi3)
        try:
            await answered_once(slack, within=60)
            # Released, not expired: answered without waiting for a lease.
            assert time.monotonic() - started < 60
        finally:
            second.close()
