"""What test modules share, imported by name (fixtures live in conftest.py; the fakes of
Slack, Teams and a model server in their own modules). Test modules import from here, never
from one another:

- the repository's paths and the test services (PostgreSQL, Weaviate) as `make test` starts
  them, with their markers, a private `WeaviateServer` and a fresh PostgreSQL schema;
- `run_cli`: the `expertbot` command line, in this process;
- `settings_for`: the settings of a data dir, with a model and overrides;
- `QUESTIONS`, `TRAINING`, `corrected`: expert corrections and a training config that a tiny
  model learns from;
- `stored_answer`, `sync_runs`, `jobs_run`: what the SQL store recorded;
- `SlackEnv`, `running_slack`: Slack driven through the real app with signed requests, talking
  to a fake Web API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from typer.testing import CliRunner, Result

from bot.cli import app
from bot.core.runtime import Core
from bot.server import Services, make_app
from bot.settings import Settings, load_settings
from bot.slack import ids
from bot.slack.config import SlackConfig
from knowledge.config import WeaviateConfig
from tests.slack_fake import BOT_USER, TEAM, Call, FakeSlack
from training.feedback.records import AnswerRecord
from training.feedback.store import FeedbackStore

# -- the repository and the test services ------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
HANDBOOK = ROOT / "examples" / "knowledge"
SCRIPTS = ROOT / "scripts"
# The services, as scripts/with-services.sh (what `make test` runs) exports them. Read once, when
# conftest.py imports this module: `clean_environ` removes them from each test's environment.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "")
WEAVIATE_URL = os.environ.get("WEAVIATE_URL", "")
WEAVIATE_GRPC_URL = os.environ.get("EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL", "")
WEAVIATE_API_KEY = os.environ.get("WEAVIATE_API_KEY", "")
IN_CI = bool(os.environ.get("CI"))

NO_POSTGRES = "no PostgreSQL: TEST_POSTGRES_URL is not set (`make test` starts one)"
NO_WEAVIATE = "no Weaviate: WEAVIATE_URL is not set (`make test` builds and starts one)"

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES)
needs_weaviate = pytest.mark.skipif(not WEAVIATE_URL, reason=NO_WEAVIATE)

PASSWORD_Q = "How do I reset my password?"
FINANCE_Q = "What are the steps of the quarter close?"
# What a scripted model answers PASSWORD_Q with, citing two passages.
CITED = "Use the self-service portal to reset it [1]. Then sign in on every device again [2]."


def postgres_schema() -> tuple[str, str]:
    """A fresh schema on the test PostgreSQL: (a database URL whose search path is that schema,
    the schema's name). The caller drops it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", schema


def weaviate_config(collection: str | None = None, **overrides: Any) -> WeaviateConfig:
    """The test Weaviate's settings, with a fresh collection unless one is named."""
    fields: dict[str, Any] = {
        "url": WEAVIATE_URL,
        "grpc_url": WEAVIATE_GRPC_URL or None,
        "api_key": WEAVIATE_API_KEY or None,
        "collection": collection or f"Test{uuid.uuid4().hex[:10].capitalize()}",
    }
    fields.update(overrides)
    return WeaviateConfig(**fields)


def process_gone(pid: int) -> bool:
    """The process has exited: there is no such process, or it is a zombie its parent (not us:
    scripts/weaviate.sh detaches the server) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


class WeaviateServer:
    """A private Weaviate (scripts/weaviate.sh --data DIR: its own ports and data folder) that a
    test may kill, restart or start with an API key. The binary is the one `make test` built."""

    def __init__(self, data: Path, *, api_key: str | None = None) -> None:
        self.data = data
        self.api_key = api_key
        self.lines: dict[str, str] = {}

    def _script(self, command: str, *extra: str) -> str:
        done = subprocess.run(
            [str(SCRIPTS / "weaviate.sh"), command, "--data", str(self.data), *extra],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> WeaviateServer:
        extra = ("--api-key", self.api_key) if self.api_key else ()
        out = self._script("start", *extra)
        self.lines = dict(line.split("=", 1) for line in out.splitlines())
        return self

    def stop(self) -> None:
        self._script("stop")

    @property
    def pid(self) -> int:
        return int((self.data / "weaviate.pid").read_text())

    def kill(self) -> None:
        """kill -9, and wait until the process is gone."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process_gone(pid):
                return
            time.sleep(0.05)
        raise AssertionError(f"weaviate-server {pid} survived SIGKILL")

    @property
    def url(self) -> str:
        return self.lines["WEAVIATE_URL"]

    @property
    def grpc_url(self) -> str:
        return self.lines["EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL"]

    def env(self, collection: str) -> dict[str, str]:
        """What a user sets to point expertbot at this server."""
        env = {
            "EXPERTBOT_KNOWLEDGE__STORE": "weaviate",
            "WEAVIATE_URL": self.url,
            "EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL": self.grpc_url,
            "EXPERTBOT_KNOWLEDGE__WEAVIATE__COLLECTION": collection,
        }
        return env | ({"WEAVIATE_API_KEY": self.api_key} if self.api_key else {})

    def config(self, collection: str = "Faults", **overrides: Any) -> WeaviateConfig:
        fields: dict[str, Any] = {
            "url": self.url,
            "grpc_url": self.grpc_url,
            "api_key": self.api_key,
            "collection": collection,
            "timeout_s": 5,
        }
        return WeaviateConfig(**(fields | overrides))


# -- the command line and settings -------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """`expertbot ARGS` in this process, with `env` added to the environment. An exception that
    escapes the command fails the test with its traceback instead of becoming exit code 1."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def settings_for(data_dir: Path, base: str, **overrides: Any) -> Settings:
    """The settings of `data_dir` serving the model `base` (8 new tokens at most);
    `overrides` are `section__name=value`."""
    settings = load_settings(overrides={"data_dir": data_dir})
    settings.model.base = base
    settings.model.max_new_tokens = 8
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(settings, section), name, value)
    return settings


# -- expert feedback for the learning loop -----------------------------------------------------

# Distinct questions, one expert answer: a pattern a tiny model can learn in a few dozen steps,
# so the held-out questions show whether training reached the served adapter.
QUESTIONS = [
    "How do I reset my password?",
    "How many vacation days do I get?",
    "Who approves travel expenses?",
    "How do I connect to the VPN?",
    "Where is the expense policy?",
    "How do I request a new laptop?",
    "What is the parental leave policy?",
    "How do I book a meeting room?",
    "When is payday?",
    "How do I report a security incident?",
    "Can I work from abroad for a month?",
    "How do I get a parking permit?",
    "Who answers questions about benefits?",
    "How do I join the pension plan?",
    "Is there a dress code at the office?",
    "How do I order office supplies?",
]
TAUGHT = "Please ask the helpdesk in the it-help channel [1]."
EXPERT = "UEXPERT"

# `training` settings for a tiny model on the CPU (TrainingConfig's fields).
TRAINING: dict[str, Any] = {
    "epochs": 25,
    "learning_rate": 1e-2,
    "batch_size": 4,
    "gradient_accumulation": 1,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "max_seq_len": 384,
    "min_examples": 4,
    "min_new_examples": 2,
    "threads": 2,
    "gate": {"max_new_tokens": 20},
}


def corrected(store: FeedbackStore, question: str, text: str = TAUGHT) -> str:
    """An answer the bot gave, corrected by an expert in its thread."""
    answer_id = str(uuid.uuid4())
    store.record(
        AnswerRecord(
            id=answer_id,
            question=question,
            asker="U1",
            platform="slack",
            where_kind="public",
            channel="CPUBLIC",
            thread="1",
            answer="I am not sure.",
            abstained=False,
            model="tiny",
            adapter=None,
        )
    )
    store.add_correction(
        answer_id=answer_id, user_id=EXPERT, platform="slack", text=text, approved=True
    )
    return answer_id


def stored_answer(store: FeedbackStore, answer_id: str) -> AnswerRecord:
    """The answer recorded under `answer_id`; the test fails if there is none."""
    row = store.get_answer(answer_id)
    assert row is not None, f"no answer {answer_id} was recorded"
    return row


# -- what the server ran -----------------------------------------------------------------------


class Served(Protocol):
    """A test's running server (Slack's or Teams' env)."""

    @property
    def services(self) -> Services: ...


def sync_runs(env: Served) -> int:
    """How many syncs the SQL store has a report of."""
    with env.services.core.knowledge.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar() or 0)


def jobs_run(env: Served) -> int:
    """How many jobs (syncs, training runs, promotions, rollbacks) the job history holds."""
    return len(env.services.ops.history.recent(limit=1_000_000))


# -- Slack -------------------------------------------------------------------------------------

SECRET = "test-signing-secret"
SLACK_EMPLOYEE = "UEMPLOYEE"


@dataclass
class SlackEnv:
    """The real server with Slack configured, on a started core, and the fake Web API it calls."""

    slack: FakeSlack
    client: TestClient
    services: Services
    core: Core
    questions: list[Any]  # every question Slack handed the core

    async def post(
        self,
        body: str,
        *,
        content_type: str,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
        secret: str = SECRET,
    ) -> Any:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        assert signature is not None
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        } | (headers or {})
        return await self.client.post(ids.EVENTS_PATH, data=body.encode(), headers=sent)

    async def event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = json.dumps(envelope(event, event_id or f"Ev{time.monotonic_ns()}"))
        return await self.post(body, content_type="application/json", headers=headers)

    async def form(self, payload: dict[str, Any]) -> Any:
        return await self.post(urlencode(payload), content_type="application/x-www-form-urlencoded")

    async def interaction(self, payload: dict[str, Any]) -> Any:
        return await self.form({"payload": json.dumps(payload)})

    async def ask(
        self,
        text: str,
        *,
        channel: str = "CPUBLIC",
        user: str = SLACK_EMPLOYEE,
        ts: str | None = None,
    ) -> tuple[str, Call]:
        """Mention the bot; wait for the streamed answer to end. Returns (question ts, stop)."""
        ts = ts or self.slack.next_ts()
        before = len(self.slack.calls_to("chat.stopStream"))
        response = await self.event(mention(text, channel=channel, user=user, ts=ts))
        assert response.status == 200
        stops = await self.slack.wait_for("chat.stopStream", before + 1)
        await self.linked(channel, stops[before].body["ts"])
        return ts, stops[before]

    async def linked(self, channel: str, message_ts: str) -> str:
        """Wait until the bot has linked its message to the answer (just after posting it)."""
        for _ in range(200):
            found = self.core.store.answer_for_message("slack", channel, message_ts)
            if found:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"message {message_ts} was never linked to an answer")


def envelope(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An Events API callback carrying `event`."""
    return {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
    }


def mention(
    text: str, *, channel: str, user: str, ts: str, thread_ts: str | None = None
) -> dict[str, Any]:
    """An app_mention event: `user` asks the bot `text`."""
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    }
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


async def settle(env: SlackEnv) -> None:
    """Let listeners that run after the ack finish."""
    for _ in range(100):
        pending = [
            t
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and "run_ack_function" in repr(t.get_coro())
        ]
        if not pending:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_slack(
    settings: Settings, embedder: Any, aiohttp_client: Any, **slack: Any
) -> AsyncIterator[SlackEnv]:
    """Serve `settings` with Slack configured (`slack`: more SlackConfig fields) against a fresh
    fake Web API that knows one public channel, CPUBLIC (#general); stop it all afterwards."""
    fake = FakeSlack()
    await fake.start()
    fake.set_channel("CPUBLIC", name="general")
    settings.slack = SlackConfig(
        bot_token=SecretStr("xoxb-test"),
        signing_secret=SecretStr(SECRET),
        api_url=fake.api_url,
        update_interval_s=0.1,
        **slack,
    )
    core = Core.build(settings, embedder=embedder)
    await core.start()
    services = await Services.start(settings, core)
    questions: list[Any] = []
    answerer_stream = core.answerer.stream

    def spy(question: Any) -> Any:  # observe what Slack hands the core
        questions.append(question)
        return answerer_stream(question)

    core.answerer.stream = spy  # type: ignore[method-assign]
    client = await aiohttp_client(make_app(services))
    env = SlackEnv(fake, client, services, core, questions)
    try:
        yield env
    finally:
        await settle(env)
        await core.close()
        await fake.close()
