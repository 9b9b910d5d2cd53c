"""Chaos: replicas killed, restarted one by one and cut off from their database while Slack
questions keep coming; every question must be answered exactly once.

`--replicas` `expertbot serve` processes (this checkout, started as bench/_common.py starts the
server; the demo model with `max_new_tokens` 32, one torch thread each, `model.timeout_s` 600;
the delivery settings' defaults: a lease of 30 s renewed every 10 s, a scan for expired leases
every 10 s, `max_age_s` 300; `server.drain_s` 25) share one PostgreSQL database (a cluster of the
bench's own, `EXPERTBOT_PG_CLUSTER=expertbot-chaos scripts/postgres.sh start`, a fresh database
each run) and one data dir holding the example handbook, synced once (the LanceDB index all of
them read). They talk to a local fake of Slack's Web API in the bench process
(tests/slack_fake.py), which records every call with its time.

Slack's side: a load balancer sends each delivery to a random replica whose /readyz answered 200
at its last poll (every 0.5 s); a delivery that fails (connection error, non-200, no response in
3 s, no ready replica) is retried with the same event_id and `X-Slack-Retry-Num: n` on another
ready replica after 1.5, 4.5 and 13.5 s (at most 3 retries); and about 20% of the events are
delivered a second time (retry header) to another replica 0.2-2 s after the first.

1. Kill phase: `--questions` signed `app_mention` events at once (distinct event ids and message
   ts, the public questions of examples/questions.jsonl in turn). Meanwhile, every
   `--kill-every` ±1 s, a random ready replica gets SIGKILL and is started again, but only while
   at least two are ready (so that one is always up), until every question has its reply or
   `--kill-for` s have passed; then a rolling restart while the tail of answers is written:
   each replica in turn gets SIGTERM (its exit code and how long it took are recorded) and its
   successor is started and waited for (/readyz 200) before the next one.
2. PostgreSQL phase: `--pg-questions` events over 20 s; after half of them the cluster is
   stopped, left down 5 s, and started again.

Each phase then waits (at most `--timeout` s from its start) until every question has a reply
and none is left open in the database. Counted per phase from what the fake recorded: a final
reply is a message that shows a finished answer (chat.stopStream, chat.update or
chat.postMessage carrying the footer `blocks`) or an apology (chat.postMessage or chat.update
whose text starts "Sorry"); a thread's replies are its DISTINCT such messages (an answer resumed
in place updates the same message: one reply).

    answered once / twice or more / never   per question (the last two must be 0)
    late answers   answers shown later than `max_age_s` after the question that are not an
                   apology; the server only promises that an answer BEGUN (a question taken)
                   after max age is an apology, so those are counted apart (must be 0)
    resumed        `delivery.resumed` lines in the replicas' logs (a log per replica life)
    latency        from a question's first delivery to its first final reply
    states         processed_events by state at the end: only `answered` and `failed`

    python bench/chaos.py [--questions 100] [--pg-questions 50] [--kill-every 9]
                          [--kill-for 300] [--replicas 3] [--timeout 1500]
                          [--max-new-tokens 32] [--model-timeout 600] [--seed S] [--json] [--keep]

About 20-30 minutes on 2 cores. `--keep` keeps the data dir (the replicas' logs are in its logs/
folder) and the database; questions answered twice or never are printed with their deliveries,
replies, database row and log lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from _common import (
    ROOT,
    ThreadedSlack,
    free_port,
    git_rev,
    machine,
    percentile,
    questions,
    signed,
    slack_serve_env,
    start_server,
    stop_server,
    synced_handbook,
)

CLUSTER = "expertbot-chaos"
TOO_OLD = "Sorry — I was interrupted"  # bot/intake.py's apology for a question too old
FINAL_METHODS = ("chat.stopStream", "chat.update", "chat.postMessage")
RETRY_DELAYS_S = (1.5, 4.5, 13.5)  # before retries 1, 2, 3
ACK_TIMEOUT_S = 3.0  # Slack retries an event not acked within 3 s
DUPLICATES = 0.2
MAX_AGE_S = 300.0  # delivery.max_age_s (the default)


# -- Slack's side ------------------------------------------------------------------------------


class ChaosSlack(ThreadedSlack):
    """The fake, remembering the thread of every message the bot posts (streamed or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_of: dict[str, str] = {}
        self.posted: dict[int, str] = {}  # id(a postMessage call's body) -> the message's ts

    def _answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = super()._answer(method, body)
        if method in ("chat.startStream", "chat.postMessage"):
            self.thread_of[answer["ts"]] = str(body.get("thread_ts"))
            self.posted[id(body)] = answer["ts"]
        return answer

    def finals(self) -> list[Final]:
        """Every call that leaves a message showing a finished answer or an apology."""
        out = []
        for call in self.calls:
            if call.failed or call.method not in FINAL_METHODS:
                continue
            text = str(call.body.get("text") or "")
            if call.body.get("blocks"):
                kind = "answer"
            elif call.method != "chat.stopStream" and text.startswith("Sorry"):
                kind = "too old" if text.startswith(TOO_OLD) else "apology"
            else:
                continue
            if call.method == "chat.postMessage":
                ts = self.posted.get(id(call.body), "?")
            else:
                ts = str(call.body.get("ts"))
            out.append(Final(self.thread_of.get(ts, "?"), ts, call.at, kind, call.method, text))
        return out


@dataclass(frozen=True)
class Final:
    thread: str
    ts: str
    at: float
    kind: str  # answer, apology, too old
    method: str
    text: str


@dataclass
class Delivery:
    at: float
    replica: int | None  # None: no replica was ready (the balancer answered 503)
    retry: int
    duplicate: bool
    outcome: str = ""  # 200, another status, "connection error", "timeout", "no ready replica"


@dataclass
class Ask:
    ts: str
    text: str
    deliveries: list[Delivery] = field(default_factory=list)
    platform_done: bool = False

    @property
    def event_id(self) -> str:  # as bench/_common.py's `signed` names it
        return f"EvBench{self.ts.replace('.', '')}"

    @property
    def first_at(self) -> float:
        return min((d.at for d in self.deliveries), default=float("nan"))

    @property
    def acked(self) -> bool:
        return any(d.outcome == "200" for d in self.deliveries)


# -- the replicas --------------------------------------------------------------------------------


class Replica:
    """One slot: a port and the successive `expertbot serve` processes that hold it."""

    def __init__(self, slot: int, data: Path, env: dict[str, str]) -> None:
        self.slot, self.data, self.env = slot, data, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.life = 0
        self.ready = False
        self.started_at = 0.0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def start(self) -> None:
        self.life += 1
        self.ready = False
        self.started_at = time.monotonic()
        log = self.data / "logs" / f"replica{self.slot}-{self.life}.log"
        self.proc = start_server(self.data, self.env, self.port, log=log)

    def kill(self) -> None:
        self.ready = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Balancer:
    """Routes to replicas whose /readyz answered 200 at the last poll (every 0.5 s)."""

    def __init__(self, replicas: list[Replica], session: aiohttp.ClientSession) -> None:
        self.replicas, self.session = replicas, session

    async def poll(self) -> None:
        while True:
            await asyncio.gather(*(self._check(r) for r in self.replicas))
            await asyncio.sleep(0.5)

    async def _check(self, replica: Replica) -> None:
        if not replica.alive:
            replica.ready = False
            return
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with self.session.get(f"{replica.url}/readyz", timeout=timeout) as response:
                replica.ready = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            replica.ready = False

    def pick(self, rng: random.Random, avoid: int | None) -> Replica | None:
        ready = [r for r in self.replicas if r.ready]
        others = [r for r in ready if r.slot != avoid]
        return rng.choice(others or ready) if ready else None

    async def until_ready(self, replica: Replica, timeout: float = 300) -> float:
        """Seconds until `replica` (just started) is ready."""
        deadline = time.monotonic() + timeout
        while not replica.ready:
            if not replica.alive or time.monotonic() > deadline:
                raise RuntimeError(
                    f"replica {replica.slot} (life {replica.life}) not ready "
                    f"(exit code {replica.proc.poll() if replica.proc else None})"
                )
            await asyncio.sleep(0.2)
        return time.monotonic() - replica.started_at


@dataclass
class Bench:
    args: argparse.Namespace
    data: Path
    secret: str
    fake: ChaosSlack
    replicas: list[Replica]
    balancer: Balancer
    session: aiohttp.ClientSession
    engine: sa.Engine
    pg_env: dict[str, str]
    rng: random.Random
    texts: list[str]
    asked: int = 0

    def asks(self, n: int) -> list[Ask]:
        """`n` new questions (new message ts and event ids), the texts taken in turn."""
        asks = [
            Ask(self.fake.next_ts(), self.texts[(self.asked + i) % len(self.texts)])
            for i in range(n)
        ]
        self.asked += n
        return asks

    # -- Slack delivering an event -------------------------------------------------------------

    async def platform(self, ask: Ask) -> None:
        """Deliver `ask` until a replica acks it (at most 3 retries), and maybe once more."""
        duplicate = None
        if self.rng.random() < DUPLICATES:
            duplicate = asyncio.create_task(self._duplicate(ask, self.rng.uniform(0.2, 2.0)))
        last: int | None = None
        for retry in range(len(RETRY_DELAYS_S) + 1):
            if retry:
                await asyncio.sleep(RETRY_DELAYS_S[retry - 1])
            delivery = await self._deliver(ask, retry, avoid=last, duplicate=False)
            if delivery.outcome == "200":
                break
            last = delivery.replica
        if duplicate is not None:
            await duplicate
        ask.platform_done = True

    async def _duplicate(self, ask: Ask, after: float) -> None:
        await asyncio.sleep(after)
        first = ask.deliveries[0].replica if ask.deliveries else None
        await self._deliver(ask, 1, avoid=first, duplicate=True)

    async def _deliver(
        self, ask: Ask, retry: int, *, avoid: int | None, duplicate: bool
    ) -> Delivery:
        replica = self.balancer.pick(self.rng, avoid)
        delivery = Delivery(time.monotonic(), replica.slot if replica else None, retry, duplicate)
        ask.deliveries.append(delivery)
        if replica is None:
            delivery.outcome = "no ready replica"
            return delivery
        body, headers = signed(self.secret, ask.text, ask.ts)
        if retry:
            reason = "http_timeout" if duplicate else "http_error"
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": reason}
        try:
            timeout = aiohttp.ClientTimeout(total=ACK_TIMEOUT_S)
            async with self.session.post(
                f"{replica.url}/slack/events", data=body, headers=headers, timeout=timeout
            ) as response:
                await response.read()
                delivery.outcome = str(response.status)
        except TimeoutError:
            delivery.outcome = "timeout"
        except aiohttp.ClientError:
            delivery.outcome = "connection error"
        return delivery

    # -- waiting -------------------------------------------------------------------------------

    def outstanding(self, asks: list[Ask]) -> list[Ask]:
        """Questions still waiting for a reply (not those Slack gave up on, never acked)."""
        answered = {f.thread for f in self.fake.finals()}
        return [a for a in asks if a.ts not in answered and not (a.platform_done and not a.acked)]

    async def until_answered(self, asks: list[Ask], deadline: float) -> None:
        while self.outstanding(asks) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

    def open_rows(self, ids: set[str]) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT event_id FROM processed_events WHERE state IN ('received', 'answering')"
                )
            ).all()
        return sum(row[0] in ids for row in rows)

    async def settle(self, asks: list[Ask], deadline: float) -> None:
        """Until no question of `asks` is left open in the database (a replica could still
        answer it again), then a few seconds more for calls in flight."""
        ids = {a.event_id for a in asks}
        while time.monotonic() < deadline:
            try:
                if not await asyncio.to_thread(self.open_rows, ids):
                    break
            except sa.exc.SQLAlchemyError:
                pass
            await asyncio.sleep(1)
        await asyncio.sleep(5)

    def held_by(self, replica: Replica) -> int:
        """Open questions leased to `replica`'s current process (its owner name holds the pid)."""
        try:
            with self.engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM processed_events WHERE owner LIKE :pid "
                            "AND state IN ('received', 'answering')"
                        ),
                        {"pid": f"%:{replica.pid}:%"},
                    ).scalar()
                    or 0
                )
        except sa.exc.SQLAlchemyError:
            return -1

    # -- the phases ----------------------------------------------------------------------------

    async def kill_phase(self) -> dict[str, Any]:
        asks = self.asks(self.args.questions)
        started = time.monotonic()
        deadline = started + self.args.timeout
        platform = [asyncio.create_task(self.platform(a)) for a in asks]
        kills: list[dict[str, Any]] = []
        skipped = [0]
        killer = asyncio.create_task(self._killer(kills, skipped, started))
        await self.until_answered(asks, min(deadline, started + self.args.kill_for))
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
        kills_end_s = time.monotonic() - started
        unanswered_at_restart = len(self.outstanding(asks))
        for replica in self.replicas:  # the last ones killed are still starting
            if not replica.alive:
                replica.start()
        for replica in self.replicas:
            await self.balancer.until_ready(replica)
        restarts = await self.rolling_restart()
        await self.until_answered(asks, deadline)
        await self.settle(asks, deadline)
        await _finish(platform)
        return {
            "kills": kills,
            "kill_ticks_skipped": skipped[0],
            "kills_ended_s": round(kills_end_s, 1),
            "unanswered_at_rolling_restart": unanswered_at_restart,
            "rolling_restart": restarts,
            "asks": asks,
            "started": started,
        }

    async def _killer(self, kills: list[dict[str, Any]], skipped: list[int], t0: float) -> None:
        every = self.args.kill_every
        while True:
            await asyncio.sleep(self.rng.uniform(max(0.5, every - 1), every + 1))
            ready = [r for r in self.replicas if r.ready and r.alive]
            if len(ready) < 2:  # keep one up
                skipped[0] += 1
                continue
            victim = self.rng.choice(ready)
            held = await asyncio.to_thread(self.held_by, victim)
            pid, life, lived = victim.pid, victim.life, time.monotonic() - victim.started_at
            victim.kill()
            kills.append(
                {
                    "at_s": round(time.monotonic() - t0, 1),
                    "replica": victim.slot,
                    "pid": pid,
                    "life": life,
                    "lived_s": round(lived, 1),
                    "held": held,
                }
            )
            victim.start()

    async def rolling_restart(self) -> list[dict[str, Any]]:
        """SIGTERM each replica in turn; its successor must be ready before the next one."""
        done = []
        for replica in self.replicas:
            assert replica.proc is not None
            held = await asyncio.to_thread(self.held_by, replica)
            pid = replica.pid
            code, stop_s = await stop_server(replica.proc)
            replica.ready = False
            replica.start()
            ready_s = await self.balancer.until_ready(replica)
            done.append(
                {
                    "replica": replica.slot,
                    "pid": pid,
                    "held": held,
                    "exit_code": code,
                    "stop_s": round(stop_s, 2),
                    "successor_ready_s": round(ready_s, 1),
                }
            )
        return done

    async def pg_phase(self) -> dict[str, Any]:
        n = self.args.pg_questions
        asks = self.asks(n)
        started = time.monotonic()
        deadline = started + self.args.timeout
        platform, outage = [], None
        for i, ask in enumerate(asks):
            platform.append(asyncio.create_task(self.platform(ask)))
            if i == n // 2:
                outage = asyncio.create_task(self.restart_postgres(started))
            await asyncio.sleep(20 / n)
        restart = await outage if outage is not None else {}
        await self.until_answered(asks, deadline)
        await self.settle(asks, deadline)
        await _finish(platform)
        return {"postgres_restart": restart, "asks": asks, "started": started}

    async def restart_postgres(self, started: float) -> dict[str, Any]:
        t0 = time.monotonic()
        await asyncio.to_thread(postgres, "stop", self.pg_env)
        stopped = time.monotonic()
        await asyncio.sleep(5)
        await asyncio.to_thread(postgres, "start", self.pg_env)
        up = time.monotonic()
        self.engine.dispose()
        while not all(r.ready for r in self.replicas) and time.monotonic() - up < 120:
            await asyncio.sleep(0.2)
        return {
            "stop_at_s": round(t0 - started, 1),
            "down_s": round(up - stopped, 1),
            "stop_took_s": round(stopped - t0, 1),
            "all_ready_after_start_s": round(time.monotonic() - up, 1),
        }


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- PostgreSQL ----------------------------------------------------------------------------------


def postgres(command: str, env: dict[str, str]) -> str:
    """scripts/postgres.sh on the bench's own cluster; the URL for `start`."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh {command} failed: {done.stderr[-2000:]}")
    return done.stdout.strip().partition("=")[2]


def fresh_database(url: str) -> str:
    """A new, empty database on the cluster of `url`; its URL."""
    name = f"chaos_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    base, name = url.rsplit("/", 1)
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


# -- counting --------------------------------------------------------------------------------------


def log_lines(data: Path) -> list[dict[str, Any]]:
    """Every JSON line of every replica life's log, with the file it came from (`_log`)."""
    lines = []
    for path in sorted((data / "logs").glob("replica*.log")):
        for text in path.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                with contextlib.suppress(ValueError):  # a line cut short by SIGKILL
                    lines.append(json.loads(text) | {"_log": path.name})
    return lines


def db_rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT event_id, state, attempts, received_at, finished_at, messages "
                "FROM processed_events WHERE platform = 'slack'"
            )
        ).mappings()
        return {str(r["event_id"]): dict(r) for r in rows}


def _wall(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def count(
    phase: dict[str, Any],
    fake: ChaosSlack,
    lines: list[dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    max_age_s: float,
) -> dict[str, Any]:
    asks: list[Ask] = phase.pop("asks")
    started: float = phase.pop("started")
    by_thread: dict[str, list[Final]] = defaultdict(list)
    for final in fake.finals():
        by_thread[final.thread].append(final)
    ids = {a.event_id: a for a in asks}
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        if line.get("event_id") in ids:
            events[str(line["event_id"])].append(line)
    deliveries = [d for a in asks for d in a.deliveries]
    once: list[Ask] = []
    twice: list[Ask] = []
    never: list[Ask] = []
    latency: list[float] = []
    kinds: Counter[str] = Counter()
    late: list[str] = []
    late_begun_late: list[str] = []
    for ask in asks:
        finals = by_thread.get(ask.ts, [])
        messages = {f.ts for f in finals}
        if not messages:
            never.append(ask)
            continue
        (once if len(messages) == 1 else twice).append(ask)
        latency.append(min(f.at for f in finals) - ask.first_at)
        last = {f.ts: f for f in finals}  # what each message shows in the end
        kinds.update(f.kind for f in last.values())
        row = rows.get(ask.event_id)
        if row is None:
            continue
        received = row["received_at"]
        for f in finals:
            shown_age = f.at - ask.first_at  # the first delivery is at most 3 s before the claim
            if f.kind != "answer" or shown_age <= max_age_s:
                continue
            late.append(ask.event_id)
            taken = [
                _wall(ln["timestamp"])
                for ln in events[ask.event_id]
                if ln.get("event") == "delivery.resumed"
            ]
            begun = max(taken, default=received)
            if (begun - received).total_seconds() > max_age_s:
                late_begun_late.append(ask.event_id)
    log_events = Counter(str(ln.get("event")) for evs in events.values() for ln in evs)
    states = Counter(str(rows[i]["state"]) if i in rows else "not stored" for i in ids)
    attempts = Counter(int(rows[i]["attempts"] or 0) for i in ids if i in rows)
    evidence = {a.event_id: _evidence(a, by_thread, events, rows) for a in twice + never}
    return phase | {
        "questions": len(asks),
        "deliveries": len(deliveries),
        "first_deliveries": sum(not d.duplicate and d.retry == 0 for d in deliveries),
        "retries": sum(not d.duplicate and d.retry > 0 for d in deliveries),
        "duplicates_sent": sum(d.duplicate for d in deliveries),
        "delivery_outcomes": dict(Counter(d.outcome for d in deliveries)),
        "never_acked": sum(not a.acked for a in asks),
        "answered_once": len(once),
        "answered_twice_or_more": len(twice),
        "never_answered": len(never),
        "replies": dict(kinds),
        "late_answers": len(late),
        "late_answers_begun_after_max_age": len(late_begun_late),
        "resumed": log_events["delivery.resumed"],
        "too_old": log_events["delivery.too_old"],
        "gave_up": log_events["delivery.gave_up"],
        "duplicates_dropped": log_events["delivery.duplicate"],
        "reply_failed": log_events["delivery.reply_failed"],
        "finish_failed": log_events["delivery.finish_failed"],
        "latency_s": {
            "p50": round(percentile(latency, 50), 1),
            "p90": round(percentile(latency, 90), 1),
            "p99": round(percentile(latency, 99), 1),
            "max": round(max(latency, default=float("nan")), 1),
        },
        "last_reply_s": round(
            max((f.at for a in asks for f in by_thread.get(a.ts, [])), default=started) - started, 1
        ),
        "states": dict(states),
        "attempts": dict(sorted(attempts.items())),
        "late": late,
        "evidence": evidence,
    }


def _evidence(
    ask: Ask,
    by_thread: dict[str, list[Final]],
    events: dict[str, list[dict[str, Any]]],
    rows: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """What happened to one question: its deliveries, its replies, its row, its log lines."""
    t0 = ask.first_at
    row = rows.get(ask.event_id, {})
    return {
        "thread": ask.ts,
        "deliveries": [
            f"+{d.at - t0:.1f}s replica {d.replica} retry {d.retry}"
            f"{' (duplicate)' if d.duplicate else ''}: {d.outcome}"
            for d in ask.deliveries
        ],
        "replies": [
            f"+{f.at - t0:.1f}s {f.method} ts {f.ts}: {f.kind} {f.text[:60]!r}"
            for f in by_thread.get(ask.ts, [])
        ],
        "row": {k: str(v) for k, v in row.items()},
        "log": [
            f"{ln.get('timestamp')} {ln['_log']} {ln.get('level')} {ln.get('event')} "
            + " ".join(
                f"{k}={v}"
                for k, v in ln.items()
                if k
                not in ("timestamp", "_log", "level", "event", "event_id", "logger", "exception")
            )
            for ln in events.get(ask.event_id, [])
        ],
    }


# -- running it --------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, data: Path, pg_env: dict[str, str]) -> dict[str, Any]:
    base_url = await asyncio.to_thread(postgres, "start", pg_env)
    db_url = await asyncio.to_thread(fresh_database, base_url)
    info: dict[str, Any] = {"database": db_url.rsplit("/", 1)[1]}
    engine = sa.create_engine(db_url, pool_pre_ping=True)
    replicas: list[Replica] = []
    try:
        extra = {"EXPERTBOT_DATABASE_URL": db_url}
        env = await asyncio.to_thread(synced_handbook, data, extra=extra)
        secret = secrets.token_hex(16)
        async with ChaosSlack() as fake:
            env |= slack_serve_env(fake.api_url, secret, max_new_tokens=args.max_new_tokens) | {
                "EXPERTBOT_MODEL__TIMEOUT_S": str(args.model_timeout),
                "EXPERTBOT_MODEL__THREADS": "1",
                "EXPERTBOT_SCHEDULE__SYNC": "",
                "EXPERTBOT_SCHEDULE__TRAIN": "",
            }
            (data / "logs").mkdir(exist_ok=True)
            replicas = [Replica(i, data, env) for i in range(args.replicas)]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                balancer = Balancer(replicas, session)
                poller = asyncio.create_task(balancer.poll())
                # The first one alone: it prepares the demo model in the shared data dir.
                replicas[0].start()
                first_ready = await balancer.until_ready(replicas[0])
                for replica in replicas[1:]:
                    replica.start()
                rest_ready = [await balancer.until_ready(r) for r in replicas[1:]]
                info["replica_ready_s"] = [round(first_ready, 1)] + [
                    round(s, 1) for s in rest_ready
                ]
                ctx = Bench(
                    args,
                    data,
                    secret,
                    fake,
                    replicas,
                    balancer,
                    session,
                    engine,
                    pg_env,
                    random.Random(args.seed),
                    questions(),
                )
                kill = await ctx.kill_phase()
                pg = await ctx.pg_phase()
                poller.cancel()
            lines = log_lines(data)
            rows = await asyncio.to_thread(db_rows, engine)
            info["kill_phase"] = count(kill, fake, lines, rows, MAX_AGE_S)
            info["pg_phase"] = count(pg, fake, lines, rows, MAX_AGE_S)
            info["replica_lives"] = sum(r.life for r in replicas)
            info["log_levels"] = dict(Counter(str(ln.get("level")) for ln in lines))
            info["errors"] = dict(
                Counter(str(ln.get("event")) for ln in lines if ln.get("level") == "error")
            )
            info["all_states"] = dict(Counter(str(r["state"]) for r in rows.values()))
    finally:
        for replica in replicas:
            replica.kill()
        engine.dispose()
        with contextlib.suppress(Exception):
            if not args.keep:
                await asyncio.to_thread(drop_database, db_url)
    return info


def report(r: dict[str, Any]) -> None:
    print(f"machine: {r['machine']}  commit {r['commit']}  {r['date']}")
    print(
        f"{r['replicas']} replicas (ready after {r['replica_ready_s']} s), demo model, "
        f"max_new_tokens {r['max_new_tokens']}, model.timeout_s {r['model_timeout_s']}, "
        f"one torch thread each; PostgreSQL cluster {CLUSTER}, database {r['database']}; "
        f"seed {r['seed']}"
    )
    for name, title in (("kill_phase", "Kill phase"), ("pg_phase", "PostgreSQL phase")):
        p = r[name]
        print(f"\n{title}: {p['questions']} questions")
        print(
            f"  deliveries {p['deliveries']} (first {p['first_deliveries']}, retries "
            f"{p['retries']}, duplicates {p['duplicates_sent']}); outcomes "
            f"{p['delivery_outcomes']}; never acked {p['never_acked']}"
        )
        print(
            f"  answered exactly once {p['answered_once']}, twice or more "
            f"{p['answered_twice_or_more']} (must be 0), never {p['never_answered']} (must be 0)"
        )
        print(
            f"  replies by kind {p['replies']}; answers later than max age that are not an "
            f"apology: {p['late_answers']} (begun after max age: "
            f"{p['late_answers_begun_after_max_age']}, must be 0)"
        )
        print(
            f"  resumed {p['resumed']}, too old {p['too_old']}, gave up {p['gave_up']}, copies "
            f"dropped by the claim {p['duplicates_dropped']}, reply failed "
            f"{p['reply_failed']}, finish failed {p['finish_failed']}"
        )
        lat = p["latency_s"]
        print(
            f"  latency first delivery -> final reply: p50 {lat['p50']} s  p90 {lat['p90']} s  "
            f"p99 {lat['p99']} s  max {lat['max']} s; last reply at {p['last_reply_s']} s"
        )
        print(f"  database states {p['states']}; attempts {p['attempts']}")
        if name == "kill_phase":
            kills = p["kills"]
            print(
                f"  kills (SIGKILL, only while >= 2 replicas ready: one always up): "
                f"{len(kills)} in {p['kills_ended_s']} s, ticks skipped {p['kill_ticks_skipped']}; "
                f"questions held by the killed process: {[k['held'] for k in kills]}"
            )
            print(
                f"  unanswered when the rolling restart began: {p['unanswered_at_rolling_restart']}"
            )
            for s in p["rolling_restart"]:
                print(
                    f"  SIGTERM replica {s['replica']} (holding {s['held']}): exit code "
                    f"{s['exit_code']} after {s['stop_s']} s; successor ready in "
                    f"{s['successor_ready_s']} s"
                )
        else:
            pg = p["postgres_restart"]
            print(
                f"  PostgreSQL stopped {pg['stop_at_s']} s into the phase (the stop took "
                f"{pg['stop_took_s']} s), down {pg['down_s']} s until `start` returned; every "
                f"replica ready {pg['all_ready_after_start_s']} s after that"
            )
        for event_id, ev in p["evidence"].items():
            print(f"  !! {event_id}:")
            for key, label in (("deliveries", "delivery"), ("replies", "reply"), ("log", "log")):
                for item in ev[key]:
                    print(f"       {label}: {item}")
            print(f"       row: {ev['row']}")
    print(
        f"\nlog levels {r['log_levels']}; errors {r['errors']}; replica lives {r['replica_lives']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=100, help="kill phase (default 100)")
    parser.add_argument("--pg-questions", type=int, default=50, help="PostgreSQL phase (50)")
    parser.add_argument("--kill-every", type=float, default=9.0, help="seconds, ±1 (default 9)")
    parser.add_argument(
        "--kill-for", type=float, default=300.0, help="kills stop after this (s; default 300)"
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1500.0, help="per phase (s)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model-timeout", type=float, default=600.0, help="model.timeout_s")
    parser.add_argument("--seed", type=int, help="for the routing, duplicates and kills")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the database")
    args = parser.parse_args()
    if args.replicas < 2:
        parser.error("--replicas must be at least 2 (one stays up while another is killed)")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    pg_env = {k: v for k, v in os.environ.items() if k != "TEST_POSTGRES_URL"}
    pg_env["EXPERTBOT_PG_CLUSTER"] = CLUSTER
    data = Path(tempfile.mkdtemp(prefix="expertbot-chaos-"))
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        results = asyncio.run(bench(args, data, pg_env))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"failed: {exc}")
        for log in sorted((data / "logs").glob("*.log"))[-3:]:
            print(f"--- {log.name}")
            print("\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        raise SystemExit(1) from None
    finally:
        with contextlib.suppress(RuntimeError):
            postgres("stop", pg_env)
        if args.keep:
            print(f"data dir kept: {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)
    results = {
        "machine": machine(),
        "commit": git_rev(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "replicas": args.replicas,
        "max_new_tokens": args.max_new_tokens,
        "model_timeout_s": args.model_timeout,
        "seed": args.seed,
    } | results
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        report(results)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the bench: its `finally` kills the replicas


if __name__ == "__main__":
    main()
