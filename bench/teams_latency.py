"""Teams response latency under a burst: N concurrent activities against a running `expertbot serve`.

The real server as a subprocess (`expertbot --data-dir D serve`, the example handbook synced into
D, the demo model by default, Teams in anonymous mode) replies to a local fake of the Bot
Connector service (tests/teams_fake.py), the activities' serviceUrl. N message activities, each
from its own 1:1 chat (so each streams: informative update, text updates, final message), with
public questions cycled from examples/questions.jsonl, are sent at once after one warm-up.

    response = from sending an activity to the final message of its answer arriving at the
               connector (streamType "final"); every activity must get exactly one
    http     = from sending an activity to its HTTP response (202; the SDK runs the turn,
               answer included, before it responds)

    python bench/teams_latency.py [-n 50] [--model demo] [--max-new-tokens 64]
                                  [--model-timeout 600] [--answer-timeout 900] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    free_port,
    percentile,
    questions,
    start_server,
    stop_server,
    synced_handbook,
    wait_ready,
)
from slack_ack import run_info

from tests.teams_fake import FakeConnector, activity


async def send(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """POST one activity; the seconds until its response, negated when it was not a 202."""
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            await response.read()
            ok = response.status == 202
    except aiohttp.ClientError:
        ok = False
    took = time.perf_counter() - started
    return took if ok else -took


def finals(connector: FakeConnector) -> list[tuple[str, float, str]]:
    """(activity id answered, arrival, text) of every message the bot sent (final or single)."""
    return [
        (s.path.rsplit("/", 1)[-1], s.at, str(s.body.get("text", "")))
        for s in connector.sent
        if s.body.get("type") == "message"
    ]


async def wait_answers(connector: FakeConnector, ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ids <= {a for a, _, _ in finals(connector)}:
        await asyncio.sleep(0.2)


async def bench(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = synced_handbook(data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    connector = FakeConnector()
    await connector.start()
    env |= {
        "EXPERTBOT_TEAMS__ANONYMOUS": "true",
        "EXPERTBOT_MODEL__BASE": args.model,
        "EXPERTBOT_MODEL__MAX_NEW_TOKENS": str(args.max_new_tokens),
        "EXPERTBOT_MODEL__TIMEOUT_S": str(args.model_timeout),
        "EXPERTBOT_LOG_FORMAT": "json",
    }
    proc = start_server(data, env, port)
    texts = questions()
    try:
        limits = aiohttp.TCPConnector(limit=max(100, 2 * args.n))
        timeout = aiohttp.ClientTimeout(total=args.answer_timeout)
        async with aiohttp.ClientSession(connector=limits, timeout=timeout) as session:
            started = time.monotonic()
            await wait_ready(session, url, proc)
            ready_s = time.monotonic() - started
            messages = f"{url}/api/messages"
            warm = activity(texts[-1], service_url=connector.url, conversation="a:warm")
            t = time.monotonic()
            await send(session, messages, warm)
            await wait_answers(connector, {warm["id"]}, args.answer_timeout)
            warmup_s = time.monotonic() - t
            batch = [
                activity(
                    texts[i % len(texts)],
                    service_url=connector.url,
                    conversation=f"a:bench-{i}",
                    user=f"aad-bench-{i}",
                    activity_id=f"bench-{i}",
                )
                for i in range(args.n)
            ]
            sent_at = time.monotonic()
            https = await asyncio.gather(*(send(session, messages, a) for a in batch))
            await wait_answers(connector, {a["id"] for a in batch}, args.answer_timeout)
    finally:
        code, _ = await stop_server(proc)
        await connector.close()
    ids = {a["id"] for a in batch}
    answered = [(a, at, text) for a, at, text in finals(connector) if a in ids]
    per_activity = Counter(a for a, _, _ in answered)
    response_s = [at - sent_at for _, at, _ in answered]
    http_s = [abs(h) for h in https]
    apologies = sum("Sorry" in text for _, _, text in answered)
    streamed = sum(
        1 for s in connector.sent if s.body.get("type") == "typing" and s.stream_type == "streaming"
    )
    return run_info(args) | {
        "ready_s": round(ready_s, 1),
        "warmup_answer_s": round(warmup_s, 2),
        "response_p50_s": round(percentile(response_s, 50), 2),
        "response_p99_s": round(percentile(response_s, 99), 2),
        "response_max_s": round(max(response_s, default=float("nan")), 2),
        "http_p50_s": round(percentile(http_s, 50), 2),
        "http_p99_s": round(percentile(http_s, 99), 2),
        "non_202": sum(h < 0 for h in https),
        "replies": len(per_activity),
        "duplicate_replies": sum(c > 1 for c in per_activity.values()),
        "apologies": apologies,
        "streamed_updates": streamed,
        "server_exit_code": code,
    }


def report(r: dict[str, Any]) -> None:
    print(f"machine: {r['machine']}  commit {r['commit']}")
    print(
        f"model {r['model']}, max_new_tokens {r['max_new_tokens']}, model.timeout_s "
        f"{r['model_timeout_s']}; {r['n']} concurrent activities (1:1 chats, streamed)"
    )
    print(
        f"server ready after {r['ready_s']} s; warm-up answer (idle server) {r['warmup_answer_s']} s"
    )
    print(
        f"response latency (send → final message): p50 {r['response_p50_s']} s  p99 "
        f"{r['response_p99_s']} s  max {r['response_max_s']} s"
    )
    print(
        f"HTTP response: p50 {r['http_p50_s']} s  p99 {r['http_p99_s']} s  non-202: {r['non_202']}"
    )
    print(
        f"replies: {r['replies']} / {r['n']}  duplicates: {r['duplicate_replies']}  apologies: "
        f"{r['apologies']}  streamed updates: {r['streamed_updates']}  server exit: "
        f"{r['server_exit_code']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model-timeout", type=float, default=600)
    parser.add_argument("--answer-timeout", type=float, default=900)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(bench(Path(tmp), args))
    print(json.dumps(result, indent=2) if args.json else "", end="")
    if not args.json:
        report(result)


if __name__ == "__main__":
    main()
