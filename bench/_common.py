"""Shared helpers for the benchmark scripts (they print figures; nothing here asserts).

The machine and the commit a figure was measured on, percentiles; and for the end-to-end
benchmarks the real `expertbot serve` with Slack talking to it: `synced_handbook` syncs the
example handbook into a data dir, `start_server` runs `expertbot serve` on it as a subprocess
(this checkout's code: `python -m bot.cli` with the repository on PYTHONPATH), `wait_ready` polls
/readyz, `stop_server` sends SIGTERM; `ThreadedSlack` is the local fake of Slack's Web API
(tests/slack_fake.py) that knows which thread each streamed answer belongs to, `signed` builds an
`app_mention` event as Slack signs it and `send` posts it.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from slack_sdk.signature import SignatureVerifier

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.slack_fake import BOT_USER, TEAM, FakeSlack  # noqa: E402 (needs ROOT on sys.path)

T = TypeVar("T")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = int(
            next(
                ln.split()[1]
                for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")
            )
        )
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


EXPERTBOT = [sys.executable, "-m", "bot.cli"]
RESTRICTED = {"people/compensation-bands.md", "finance/quarter-close.md"}  # not public
CHANNEL, USER = "CBENCH", "UBENCH"


class ThreadedSlack(FakeSlack):
    """The fake, remembering which thread each stream (chat.startStream's message) answers."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_thread: dict[str, str] = {}

    def _answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = super()._answer(method, body)
        if method == "chat.startStream":
            self.stream_thread[answer["ts"]] = str(body.get("thread_ts"))
        return answer

    def answers(self) -> list[tuple[str, float]]:
        """(thread, at) of every final stopStream: the one that carries the footer blocks."""
        return [
            (self.stream_thread.get(str(c.body.get("ts")), "?"), c.at)
            for c in self.calls_to("chat.stopStream")
            if c.body.get("blocks")
        ]

    def posts_in(self, threads: set[str]) -> list[str]:
        """Plain chat.postMessage replies (busy, apology) in these threads."""
        return [
            c.body.get("thread_ts", "")
            for c in self.calls_to("chat.postMessage")
            if c.body.get("thread_ts") in threads
        ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions() -> list[str]:
    """The public questions of examples/questions.jsonl, in order."""
    lines = (ROOT / "examples" / "questions.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return [i["question"] for i in items if i["doc"] not in RESTRICTED]


def signed(secret: str, text: str, ts: str) -> tuple[bytes, dict[str, str]]:
    """An app_mention event_callback as Slack signs it (as tests/test_slack.py builds them)."""
    event = {"type": "app_mention", "user": USER, "text": f"<@{BOT_USER}> {text}", "ts": ts}
    stamp = str(int(time.time()))
    body = json.dumps(
        {
            "token": "legacy",
            "team_id": TEAM,
            "api_app_id": "A0BENCH",
            "event": event | {"channel": CHANNEL, "event_ts": ts},
            "type": "event_callback",
            "event_id": f"EvBench{ts.replace('.', '')}",
            "event_time": int(stamp),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        }
    )
    signature = str(SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }
    return body.encode(), headers


async def send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict) -> float:
    """POST one event; the seconds until its response, negated when it was not a 200."""
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            ok = response.status == 200
    except aiohttp.ClientError:
        ok = False
    took = time.perf_counter() - started
    return took if ok else -took


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            async with session.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not ready within 300 s (exit code {proc.poll()})")


async def wait_answers(fake: ThreadedSlack, threads: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {t for t, _ in fake.answers()} | set(fake.posts_in(threads))
        if threads <= done:
            return
        await asyncio.sleep(0.2)


def synced_handbook(data: Path, *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Sync the example handbook into `data`; the environment a server on it starts from
    (with `extra` in it, the sync's too: e.g. EXPERTBOT_DATABASE_URL)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": path} | (extra or {})
    sync = [*EXPERTBOT, "--data-dir", str(data), "sync", "examples/knowledge"]
    subprocess.run(sync, cwd=ROOT, env=env, check=True, capture_output=True)
    return env


def slack_serve_env(
    api_url: str, secret: str, *, model: str = "demo", max_new_tokens: int
) -> dict[str, str]:
    """The environment of a `serve` that talks to the fake Slack at `api_url` with JSON logs."""
    return {
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": secret,
        "EXPERTBOT_SLACK__API_URL": api_url,
        "EXPERTBOT_MODEL__BASE": model,
        "EXPERTBOT_MODEL__MAX_NEW_TOKENS": str(max_new_tokens),
        "EXPERTBOT_LOG_FORMAT": "json",
    }


def run_in_data_dir(
    prefix: str, data_dir: Path | None, work: Callable[[Path], Coroutine[Any, Any, T]]
) -> T:
    """Run `work` on `data_dir` (default: a temporary folder named `prefix`…); a failure prints
    its cause and the end of the server's log, and exits 1."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        data = data_dir or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        try:
            return asyncio.run(work(data))
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"failed: {exc}")
            if isinstance(exc, subprocess.CalledProcessError):
                print(exc.stderr.decode(errors="replace")[-4000:])
            log = data / "serve.log"
            if log.exists():
                print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
            raise SystemExit(1) from None


def start_server(
    data: Path, env: dict[str, str], port: int, *, log: Path | None = None
) -> subprocess.Popen:
    """`expertbot serve` on 127.0.0.1:`port`, its output in `log` (default `data`/serve.log)."""
    serve = [*EXPERTBOT, "--data-dir", str(data), "serve", "--host", "127.0.0.1"]
    with (log or data / "serve.log").open("wb") as out:
        return subprocess.Popen(
            [*serve, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
        )


async def stop_server(proc: subprocess.Popen) -> tuple[int | None, float]:
    """SIGTERM, then up to 30 s for the exit: (exit code or None if killed, seconds)."""
    proc.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    try:
        code: int | None = await asyncio.to_thread(proc.wait, 30)
    except subprocess.TimeoutExpired:
        code = None
        proc.kill()
        proc.wait()
    return code, time.monotonic() - stopping


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a server log (`EXPERTBOT_LOG_FORMAT=json`)."""
    text = path.read_text(errors="replace")
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
