"""Slack ack latency under a burst: N concurrent signed events against a running `expertbot serve`.

The real server as a subprocess (`expertbot --data-dir D serve`, the example handbook synced into
D, the demo model by default) talks to a local fake of Slack's Web API (tests/slack_fake.py). N
signed `app_mention` events (distinct event ids and message ts, public questions cycled from
examples/questions.jsonl) are sent at once over one aiohttp session, after one warm-up answer.

    ack    = from sending an event to its HTTP response (must be 200; target p99 < 50 ms: Slack
             retries an event not acked within 3 s, and the answer follows later)
    answer = from sending an event to the final chat.stopStream of its thread (the one with the
             footer blocks); every thread must get exactly one (N answers, no duplicates)

Then SIGTERM, and the server must exit within 30 s.

    python bench/slack_ack.py [-n 50] [--model demo] [--max-new-tokens 64] [--model-timeout S]
                              [--answer-timeout 900] [--data-dir D] [--json]

A burst of N answers queues: on a small CPU the last ones can pass model.timeout_s (120 s,
queueing included) and get the apology instead; --model-timeout raises it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    ThreadedSlack,
    free_port,
    git_rev,
    json_lines,
    machine,
    percentile,
    questions,
    run_in_data_dir,
    send,
    signed,
    slack_serve_env,
    start_server,
    stop_server,
    synced_handbook,
    wait_answers,
    wait_ready,
)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    """What a burst benchmark's figures were measured on."""
    return {
        "machine": machine(),
        "commit": git_rev(),
        "model": args.model,
        "max_new_tokens": args.max_new_tokens,
        "model_timeout_s": args.model_timeout,
        "n": args.n,
    }


async def bench(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = synced_handbook(data)
    secret, port = secrets.token_hex(16), free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data / "serve.log"
    async with ThreadedSlack() as fake:
        env |= slack_serve_env(
            fake.api_url, secret, model=args.model, max_new_tokens=args.max_new_tokens
        )
        if args.model_timeout is not None:
            env["EXPERTBOT_MODEL__TIMEOUT_S"] = str(args.model_timeout)
        proc = start_server(data, env, port)
        connector = aiohttp.TCPConnector(limit=max(100, 2 * args.n))
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                started = time.monotonic()
                await wait_ready(session, url, proc)
                ready_s = time.monotonic() - started
                events_url, texts = f"{url}/slack/events", questions()
                warm_ts = fake.next_ts()
                t = time.monotonic()
                warm_ack = await send(session, events_url, *signed(secret, texts[-1], warm_ts))
                await wait_answers(fake, {warm_ts}, args.answer_timeout)
                warmup_s = time.monotonic() - t
                batch = [fake.next_ts() for _ in range(args.n)]
                requests = [signed(secret, texts[i % len(texts)], ts) for i, ts in enumerate(batch)]
                sent_at = time.monotonic()
                acks = await asyncio.gather(*(send(session, events_url, *r) for r in requests))
                acked = {ts for ts, took in zip(batch, acks, strict=True) if took > 0}
                await wait_answers(fake, acked, args.answer_timeout)
        finally:
            code, stop_s = await stop_server(proc)
        answers = [(t, at) for t, at in fake.answers() if t in set(batch)]
        per_thread = Counter(t for t, _ in answers)
        refusals = fake.posts_in(set(batch))
    ack_ms = [abs(a) * 1000 for a in acks]
    answer_s = [at - sent_at for _, at in answers]
    log_lines = json_lines(log_path)
    levels = Counter(str(line.get("level")) for line in log_lines)
    abstained = sum(ln.get("event") == "slack.answered" and ln["abstained"] for ln in log_lines)
    return run_info(args) | {
        "ready_s": round(ready_s, 1),
        "warmup_answer_s": round(warmup_s, 2),
        "idle_ack_ms": round(1000 * warm_ack, 2),
        "ack_p50_ms": round(percentile(ack_ms, 50), 2),
        "ack_p99_ms": round(percentile(ack_ms, 99), 2),
        "ack_max_ms": round(max(ack_ms), 2),
        "non_200": sum(a < 0 for a in acks),
        "answers_posted": len(per_thread),
        "duplicate_answers": sum(c > 1 for c in per_thread.values()),
        "busy_or_apology_posts": len(refusals),
        "answer_p50_s": round(percentile(answer_s, 50), 2),
        "answer_max_s": round(max(answer_s, default=float("nan")), 2),
        "all_answers_s": round(max(answer_s), 2) if len(per_thread) == args.n else None,
        "answers_per_s": round(len(answers) / max(answer_s), 3) if answer_s else 0.0,
        "server_exit_code": code,
        "server_stop_s": round(stop_s, 2),
        "abstained_incl_warmup": abstained,
        "server_log": dict(levels),
        "ack_ms": sorted(round(a, 1) for a in ack_ms),
    }


def report(r: dict[str, Any]) -> None:
    n = r["n"]
    print(f"machine: {r['machine']}  commit {r['commit']}")
    timeout = r["model_timeout_s"] or "120 (default)"
    print(
        f"model {r['model']}, max_new_tokens {r['max_new_tokens']}, model.timeout_s {timeout}; "
        f"{n} concurrent events"
    )
    print(
        f"server ready after {r['ready_s']} s; warm-up event (idle server): ack "
        f"{r['idle_ack_ms']:.1f} ms, answer {r['warmup_answer_s']} s"
    )
    print(
        f"ack latency: p50 {r['ack_p50_ms']:.1f} ms  p99 {r['ack_p99_ms']:.1f} ms  max "
        f"{r['ack_max_ms']:.1f} ms  (target p99 < 50 ms)  non-200: {r['non_200']}"
    )
    print(
        f"answers posted: {r['answers_posted']} / {n}  duplicates: {r['duplicate_answers']}  "
        f"busy/apology posts: {r['busy_or_apology_posts']}  abstained (warm-up included): "
        f"{r['abstained_incl_warmup']}"
    )
    print(
        f"answer latency: p50 {r['answer_p50_s']} s  max {r['answer_max_s']} s; all {n} in: "
        f"{r['all_answers_s']} s  ({r['answers_per_s']} answers/s)"
    )
    print(
        f"server: SIGTERM -> exit code {r['server_exit_code']} after {r['server_stop_s']} s; "
        f"log levels {r['server_log']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=50, help="concurrent events (default 50)")
    parser.add_argument("--model", default="demo", help="model.base (default: the demo model)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--answer-timeout", type=float, default=900.0, help="wait (s)")
    parser.add_argument(
        "--model-timeout", type=float, help="model.timeout_s (default: the setting's, 120)"
    )
    parser.add_argument("--data-dir", type=Path, help="default: a temporary folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run_in_data_dir("expertbot-slack-ack-", args.data_dir, lambda data: bench(data, args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results)


if __name__ == "__main__":
    main()
