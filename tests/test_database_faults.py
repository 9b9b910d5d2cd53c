"""PostgreSQL restarted under a running server: `/readyz` says so, a question that arrives
meanwhile is refused with a 500 (Slack delivers it again), and once the database is back the
server answers again — the redelivered question included — without being restarted.

The test restarts a PostgreSQL cluster of its own (scripts/postgres.sh with another cluster
name), not the one the other tests share."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from knowledge.config import FolderSource
from tests.helpers import (
    HANDBOOK,
    PASSWORD_Q,
    ROOT,
    SLACK_EMPLOYEE,
    mention,
    needs_postgres,
    running_slack,
    settings_for,
)
from tests.slack_fake import Call

CLUSTER = "expertbot-faults"


def postgres(command: str) -> str:
    """scripts/postgres.sh on this test's own cluster; the URL line for `start`."""
    environ = {k: v for k, v in os.environ.items() if k != "TEST_POSTGRES_URL"}
    done = subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), command],
        env=environ | {"EXPERTBOT_PG_CLUSTER": CLUSTER},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().partition("=")[2]


@pytest.fixture
def restartable_postgres() -> Iterator[str]:
    url = postgres("start")
    admin = sa.create_engine(url)
    with admin.begin() as conn:  # a clean database for each run
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    admin.dispose()
    try:
        yield url
    finally:
        postgres("stop")


def finals(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "chat.stopStream" and c.body.get("blocks")]


@needs_postgres
async def test_a_database_restart_mid_traffic_loses_nothing_and_needs_no_server_restart(
    restartable_postgres: str, handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client
) -> None:
    settings = settings_for(handbook_data_dir, str(tiny_phi3))
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    settings.database_url = restartable_postgres
    async with running_slack(settings, embedder, aiohttp_client) as env:
        ts = env.slack.next_ts()
        await env.ask(PASSWORD_Q, ts=ts)
        assert (await env.client.get("/readyz")).status == 200

        postgres("stop")
        ready = await env.client.get("/readyz")
        body = await ready.json()
        assert ready.status == 503 and "cannot reach the database" in body["checks"]["database"]
        event = mention(PASSWORD_Q, channel="CPUBLIC", user=SLACK_EMPLOYEE, ts=env.slack.next_ts())
        refused = await env.event(event, event_id="EvOutage")
        assert refused.status == 500  # not acknowledged: Slack delivers it again
        assert len(finals(env.slack.calls)) == 1

        postgres("start")
        assert (await env.client.get("/readyz")).status == 200  # stale connections replaced
        again = await env.event(event, event_id="EvOutage", headers={"X-Slack-Retry-Num": "1"})
        assert again.status == 200
        await env.slack.wait_for("chat.stopStream", 2, timeout=60)
        await env.services.intake.idle()
        assert len(finals(env.slack.calls)) == 2
        # Once: a third delivery of the same event is dropped.
        third = await env.event(event, event_id="EvOutage", headers={"X-Slack-Retry-Num": "2"})
        assert third.status == 200
        await env.services.intake.idle()
        assert len(finals(env.slack.calls)) == 2
