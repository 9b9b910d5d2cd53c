"""Soak: steady questions for 20 minutes against a running `expertbot serve`; does it grow?

The real server as a subprocess (`expertbot --data-dir D serve`, the example handbook synced into
D, the demo model, the schedule off) talks to a local fake of Slack's Web API
(tests/slack_fake.py). After one warm-up answer, a signed `app_mention` event is sent every
--interval seconds (open loop: on the clock, whether or not the earlier ones were answered),
public questions cycled from examples/questions.jsonl. Every --sample-s seconds:

    RSS      = VmRSS of the server process (/proc/PID/status), plus its children's if any
    fds      = open file descriptors of the server process and its children (/proc/PID/fd)
    threads  = threads of the server process (/proc/PID/status)
    load     = the machine's 1-minute load average (/proc/loadavg), for a machine shared

and per row of the table (every --table-s), the questions answered (the final chat.stopStream
of their thread) since the row above, their answer latency p50/p95 (from sending the event to
that stopStream), and the questions waiting (sent, neither answered nor refused yet).

Verdict, over the second half of the run (the first half is the warm-up): the least-squares
slope of RSS (MiB/min) and of fds (per min). A slope passes when, kept up at this question rate,
it would not take the server to its limit within a week (HORIZON_DAYS) without a restart:

    RSS  limit 6 GiB  (deploy/helm/expertbot/values.yaml: a bot replica's memory limit)
    fds  limit 1024   (the usual soft `ulimit -n`, and select()'s FD_SETSIZE)
    threshold = (limit - the value at half time) / (7 days in minutes)

About 0.3 MiB/min and 0.1 fd/min for a server of 3 GiB with a few dozen fds.

The default --interval, 4 s (0.25 questions/s), keeps the demo model busy but not saturated on a
quiet 2-core machine, which answers one question in 2.4–3.8 s when idle and 0.28–0.39 a second
in batches (docs/benchmarks.md, the Slack and Teams bursts). On a machine shared with other work
it answers fewer: measure with `python bench/slack_ack.py -n 16 --model-timeout 600` and ask at
about 60 % of its answers/s. A run that did not keep up (busy or apology replies, questions
waiting piling up) says so.

    python bench/soak.py [--minutes 20] [--interval 4] [--sample-s 10] [--table-s 120]
                         [--max-new-tokens 64] [--data-dir D] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
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

MEMORY_LIMIT_MIB = 6 * 1024
FD_LIMIT = 1024
HORIZON_DAYS = 7
LATENCY = ("p50_s", "p95_s")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from every process's parent in /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then ppid
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(parents.get(tree[-1], []))
    return tree


def status_field(pid: int, name: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, Threads); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample(pid: int, t: float) -> dict[str, Any]:
    tree = process_tree(pid)
    return {
        "t_s": round(t, 1),
        "rss_mib": round(sum(status_field(p, "VmRSS") for p in tree) / 1024, 1),
        "fds": sum(fd_count(p) for p in tree),
        "threads": status_field(pid, "Threads"),
        "children": len(tree) - 1,
        "load": float(Path("/proc/loadavg").read_text().split()[0]),  # the whole machine's
    }


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 60 * cov / var if var else float("nan")


def verdict(samples: list[dict[str, Any]], half_s: float) -> dict[str, Any]:
    """RSS and fd slopes over the second half against the week-to-the-limit thresholds."""
    second = [s for s in samples if s["t_s"] >= half_s]
    if not second:
        return {"no_growth": None}
    at_half = second[0]
    minutes = HORIZON_DAYS * 24 * 60
    rss_slope = slope_per_min([(s["t_s"], s["rss_mib"]) for s in second])
    fd_slope = slope_per_min([(s["t_s"], s["fds"]) for s in second])
    rss_max = (MEMORY_LIMIT_MIB - at_half["rss_mib"]) / minutes
    fd_max = (FD_LIMIT - at_half["fds"]) / minutes
    return {
        "from_s": at_half["t_s"],
        "rss_slope_mib_per_min": round(rss_slope, 3),
        "rss_threshold_mib_per_min": round(rss_max, 3),
        "fd_slope_per_min": round(fd_slope, 3),
        "fd_threshold_per_min": round(fd_max, 3),
        "rss_range_mib": [min(s["rss_mib"] for s in second), max(s["rss_mib"] for s in second)],
        "fd_range": [min(s["fds"] for s in second), max(s["fds"] for s in second)],
        "no_growth": rss_slope <= rss_max and fd_slope <= fd_max,
    }


def table(
    samples: list[dict[str, Any]],
    latencies: list[tuple[float, float]],
    sent: list[float],
    refused: list[float],
    every: int,
) -> list[dict[str, Any]]:
    """Every `every`-th sample and the last, each with the answers finished since the row above
    and the questions still waiting (sent, neither answered nor refused yet).

    `latencies` are (finished at, seconds since the question was sent); `sent` and `refused`
    when questions were sent and refused (busy, apology); all in seconds from the start.
    """
    picked = samples[::every]
    if samples and picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    rows, last = [], -1.0
    for s in picked:
        window = [took for at, took in latencies if last < at <= s["t_s"]]
        rows.append(
            s
            | {
                "answered": sum(at <= s["t_s"] for at, _ in latencies),
                "waiting": sum(at <= s["t_s"] for at in sent)
                - sum(at <= s["t_s"] for at, _ in latencies)
                - sum(at <= s["t_s"] for at in refused),
                "in_window": len(window),
                "p50_s": round(percentile(window, 50), 2) if window else None,
                "p95_s": round(percentile(window, 95), 2) if window else None,
            }
        )
        last = s["t_s"]
    return rows


async def soak(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = synced_handbook(data)
    secret, port = secrets.token_hex(16), free_port()
    url = f"http://127.0.0.1:{port}"
    duration = 60 * args.minutes
    async with ThreadedSlack() as fake:
        env |= slack_serve_env(fake.api_url, secret, max_new_tokens=args.max_new_tokens) | {
            "EXPERTBOT_SCHEDULE__SYNC": "",  # no re-sync or training in the middle of the run
            "EXPERTBOT_SCHEDULE__TRAIN": "",
        }
        proc = start_server(data, env, port)
        sent: dict[str, float] = {}
        samples: list[dict[str, Any]] = []
        acks: list[asyncio.Task[float]] = []
        try:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                await wait_ready(session, url, proc)
                ready_s = time.monotonic() - started
                events_url, texts = f"{url}/slack/events", questions()
                warm_ts, t = fake.next_ts(), time.monotonic()
                await send(session, events_url, *signed(secret, texts[-1], warm_ts))
                await wait_answers(fake, {warm_ts}, args.answer_timeout)
                warmup_s = time.monotonic() - t
                t0 = time.monotonic()

                async def ask() -> None:
                    for k, text in enumerate(itertools.cycle(texts)):
                        due = t0 + k * args.interval
                        if due - t0 >= duration:
                            return
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                        ts = fake.next_ts()
                        sent[ts] = time.monotonic()
                        request = signed(secret, text, ts)
                        acks.append(asyncio.create_task(send(session, events_url, *request)))

                async def watch() -> None:
                    for j in itertools.count():
                        due = j * args.sample_s
                        if due > duration or proc.poll() is not None:
                            return
                        await asyncio.sleep(max(0.0, t0 + due - time.monotonic()))
                        samples.append(sample(proc.pid, due))

                await asyncio.gather(ask(), watch())
                ack_s = await asyncio.gather(*acks)
                await wait_answers(fake, set(sent), args.answer_timeout)
                drained_s = time.monotonic() - t0 - duration
        finally:
            code, stop_s = await stop_server(proc)
        answered = {t: at for t, at in fake.answers() if t in sent}
        refused = [
            c.at - t0 for c in fake.calls_to("chat.postMessage") if c.body.get("thread_ts") in sent
        ]
    latencies = sorted((at - t0, at - sent[t]) for t, at in answered.items())
    levels = Counter(str(line.get("level")) for line in json_lines(data / "serve.log"))
    all_s = [took for _, took in latencies]
    return {
        "machine": machine(),
        "commit": git_rev(),
        "date": time.strftime("%Y-%m-%d"),
        "model": "demo",
        "max_new_tokens": args.max_new_tokens,
        "minutes": args.minutes,
        "interval_s": args.interval,
        "sample_s": args.sample_s,
        "ready_s": round(ready_s, 1),
        "warmup_answer_s": round(warmup_s, 2),
        "sent": len(sent),
        "non_200": sum(a < 0 for a in ack_s),
        "answered": len(answered),
        "answered_in_time": sum(at <= duration for at, _ in latencies),
        "busy_or_apology_posts": len(refused),
        "kept_up": not refused,
        "drained_after_s": round(drained_s, 1),
        "answer_p50_s": round(percentile(all_s, 50), 2) if all_s else None,
        "answer_p95_s": round(percentile(all_s, 95), 2) if all_s else None,
        "answer_max_s": round(max(all_s), 2) if all_s else None,
        "server_exit_code": code,
        "server_stop_s": round(stop_s, 2),
        "server_log": dict(levels),
        "verdict": verdict(samples, duration / 2),
        "table": table(
            samples,
            latencies,
            [at - t0 for at in sent.values()],
            refused,
            max(1, round(args.table_s / args.sample_s)),
        ),
        "samples": samples,
    }


def report(r: dict[str, Any]) -> None:
    print(f"machine: {r['machine']}  commit {r['commit']}  {r['date']}")
    print(
        f"model {r['model']}, max_new_tokens {r['max_new_tokens']}; one question every "
        f"{r['interval_s']} s for {r['minutes']} min, a sample every {r['sample_s']} s"
    )
    print(f"server ready after {r['ready_s']} s; warm-up answer {r['warmup_answer_s']} s")
    print(
        f"questions sent {r['sent']}, answered {r['answered']} ({r['answered_in_time']} within "
        f"the run, the rest {r['drained_after_s']} s after it), busy/apology posts "
        f"{r['busy_or_apology_posts']}, non-200 acks {r['non_200']}"
    )
    print(
        f"answer latency: p50 {r['answer_p50_s']} s  p95 {r['answer_p95_s']} s  max "
        f"{r['answer_max_s']} s"
    )
    print()
    print(
        f"{'min':>5} {'answered':>8} {'window':>6} {'waiting':>7} {'RSS MiB':>8} {'fds':>4} "
        f"{'threads':>7} {'p50 s':>6} {'p95 s':>6} {'load':>5}"
    )
    for row in r["table"]:
        p50, p95 = (f"{row[k]:6.2f}" if row[k] is not None else f"{'-':>6}" for k in LATENCY)
        print(
            f"{row['t_s'] / 60:5.1f} {row['answered']:8d} {row['in_window']:6d} "
            f"{row['waiting']:7d} {row['rss_mib']:8.1f} {row['fds']:4d} {row['threads']:7d} "
            f"{p50} {p95} {row['load']:5.2f}"
        )
    print("(window: answered since the row above, p50/p95 of those; waiting: sent, not yet")
    print(" answered or refused; load: the machine's 1-minute load average)")
    waiting = max((row["waiting"] for row in r["table"]), default=0)
    if r["kept_up"]:
        print(f"the server kept up: every question answered, at most {waiting} waiting at a row")
    else:
        print(
            f"the server did NOT keep up: {r['busy_or_apology_posts']} busy or apology replies, "
            f"up to {waiting} questions waiting at a row; raise --interval"
        )
    v = r["verdict"]
    print()
    if v["no_growth"] is None:
        print("verdict: no samples in the second half")
    else:
        print(
            f"second half (from minute {v['from_s'] / 60:.1f}): RSS slope "
            f"{v['rss_slope_mib_per_min']:+.3f} MiB/min (threshold "
            f"{v['rss_threshold_mib_per_min']:.3f}; range {v['rss_range_mib'][0]}–"
            f"{v['rss_range_mib'][1]} MiB), fd slope {v['fd_slope_per_min']:+.3f}/min "
            f"(threshold {v['fd_threshold_per_min']:.3f}; range {v['fd_range'][0]}–"
            f"{v['fd_range'][1]})"
        )
        print(
            "verdict: "
            + ("no growth beyond warm-up" if v["no_growth"] else "GROWTH beyond warm-up")
            + f" (thresholds: {HORIZON_DAYS} days to {MEMORY_LIMIT_MIB} MiB / {FD_LIMIT} fds)"
        )
    print(
        f"server: SIGTERM -> exit code {r['server_exit_code']} after {r['server_stop_s']} s; "
        f"log levels {r['server_log']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="run length (default 20)")
    parser.add_argument(
        "--interval", type=float, default=4.0, help="seconds between questions (default 4)"
    )
    parser.add_argument(
        "--sample-s", type=float, default=10.0, help="seconds between samples (default 10)"
    )
    parser.add_argument(
        "--table-s", type=float, default=120.0, help="seconds between table rows (default 120)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--answer-timeout", type=float, default=300.0, help="wait for the last answers (s)"
    )
    parser.add_argument("--data-dir", type=Path, help="default: a temporary folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run_in_data_dir("expertbot-soak-", args.data_dir, lambda data: soak(data, args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results)


if __name__ == "__main__":
    main()
