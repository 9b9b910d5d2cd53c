"""Check the Teams side of expertbot against the Microsoft 365 Agents Playground.

One command, from the repository root:

    python scripts/teams_playground.py [--out build/teams-playground]

It installs what is missing (Debian's `chromium` through apt when absent and run as root; the
npm package `@microsoft/m365agentsplayground` into `~/.cache/expertbot/playground`), syncs
`examples/knowledge` into a temporary data dir, starts `expertbot serve` in anonymous Teams mode
with the demo model, starts the Playground headless (`TEAMSAPPTESTER_BROWSER=none`, Teams
channel) and drives its web page in headless Chromium with Playwright:

1. types the question into the 1:1 chat and sends it;
2. waits for the bot's answer (whatever way it arrives: streamed within the turn or posted
   through the Playground's connector) and checks it shows at least one citation marker;
3. clicks 👍 (the feedback loop's Like) under the answer and submits the feedback form;
4. checks the feedback store (SQLite in the data dir) holds exactly one active `up` rating,
   for the answer given to that question.

It prints PASS or FAIL with what it saw and the timings, and exits 1 on failure. The output
folder always gets `report.json`, the server's and the Playground's logs and a screenshot of the
answer; on failure also `failure.png` and `page.html`. The page runs offline: requests to
other hosts than localhost (the Playground's web fonts) are refused and listed in the report.

Needs the `playground` extra (`pip install -e '.[playground]'`: Playwright's Python package;
no Playwright browser download, Chromium comes from Debian), Node.js with npm, and nothing
else from the network once installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "@microsoft/m365agentsplayground"
DEFAULT_VERSION = "0.2.28"
DEFAULT_CACHE = Path.home() / ".cache" / "expertbot" / "playground"
DEFAULT_QUESTION = "How many weeks of parental leave do I get?"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}
CITATION = re.compile(r"^\s*\d+\s*$")
POPUP = '.fui-PopoverSurface, [role="dialog"], [role="tooltip"]'

# Every message of the chat as a record; each message's outermost element that holds no other
# message gets `data-pg-msg=<index>` so Playwright can act inside it.
MESSAGES_JS = """
() => {
  const headers = [...document.querySelectorAll('[aria-label="Message header"]')];
  const count = (el) => el.querySelectorAll('[aria-label="Message header"]').length;
  return headers.map((header, i) => {
    let el = header;
    while (el.parentElement && count(el.parentElement) === 1) el = el.parentElement;
    el.setAttribute('data-pg-msg', String(i));
    const author = header.querySelector('[aria-label="Message author"]');
    const markers = [...el.querySelectorAll('a[role="button"]')]
      .map((a) => a.textContent.trim())
      .filter((t) => /^\\d+$/.test(t));
    return {
      index: i,
      author: author ? author.textContent.trim() : '',
      text: el.innerText,
      citations: markers,
      ai_label: header.innerText.includes('AI generated'),
      like: !!el.querySelector('button[aria-label="Like"]'),
      card_actions: [...el.querySelectorAll('.ac-pushButton, button[title]')]
        .map((b) => b.getAttribute('title') || b.textContent.trim()),
    };
  });
}
"""


@dataclass
class Run:
    out: Path
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    external: dict[str, str] = field(default_factory=dict)  # url -> what happened
    step: str = "setup"

    def mark(self, name: str) -> None:
        self.timings[name] = round(time.monotonic() - self.started, 1)
        print(f"[{self.timings[name]:7.1f}s] {name}", flush=True)

    def fail(self, what: str) -> None:
        self.failures.append(f"{self.step}: {what}")
        print(f"  FAIL {self.step}: {what}", flush=True)


class Failed(Exception):
    """A step could not go on."""


# -- installation ----------------------------------------------------------------------------


def ensure_chromium() -> str:
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Failed("Chromium is missing: install Debian's `chromium` (apt-get install chromium)")
    print("installing chromium (apt-get) …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env)
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise Failed("apt-get installed chromium, but no chromium binary was found")


def ensure_playground(cache: Path, version: str) -> Path:
    binary = cache / "node_modules" / ".bin" / "agentsplayground"
    manifest = cache / "node_modules" / "@microsoft" / "m365agentsplayground" / "package.json"
    if binary.exists() and manifest.exists():
        installed = json.loads(manifest.read_text()).get("version")
        if version == "latest" or installed == version:
            return binary
    if not shutil.which("npm"):
        raise Failed("npm is missing: install Node.js (>= 18) with npm")
    print(f"installing {PACKAGE}@{version} into {cache} …", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache),
         f"{PACKAGE}@{version}"],
        check=True,
    )  # fmt: skip
    return binary


def ensure_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        raise Failed("Playwright is missing: pip install -e '.[playground]'") from exc


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Failed(f"{what} exited with {process.returncode} before {url} answered")
        if http_status(url) == 200:
            return
        time.sleep(1)
    raise Failed(f"{what}: {url} did not answer 200 within {timeout_s:.0f}s")


def bot_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXPERTBOT_TEAMS__", "SLACK_")) and k != "EXPERTBOT_CONFIG"
    }
    env.update(
        PYTHONPATH=str(REPO),
        EXPERTBOT_MODEL__BASE="demo",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# -- the feedback store ----------------------------------------------------------------------


def stored_feedback(data_dir: Path, question: str) -> dict[str, Any]:
    """What the feedback store holds: answers to `question` and their active ratings."""
    sys.path.insert(0, str(REPO))
    from base.database import make_engine, sqlite_url
    from training.feedback.store import FeedbackStore

    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    try:
        store = FeedbackStore(engine)
        with engine.connect() as conn:
            import sqlalchemy as sa

            from training.feedback.store import answers

            rows = conn.execute(
                sa.select(answers.c.id, answers.c.question, answers.c.answer).where(
                    answers.c.platform == "teams"
                )
            ).all()
        result: dict[str, Any] = {"counts": store.feedback_counts(), "answers": []}
        for row in rows:
            ratings = store.ratings_for(row.id, active_only=True)
            result["answers"].append(
                {
                    "id": row.id,
                    "question": row.question,
                    "answer": row.answer,
                    "ratings": [
                        {"kind": r.kind.value, "user": r.user_id, "source": r.source}
                        for r in ratings
                    ],
                }
            )
        return result
    finally:
        engine.dispose()


# -- the browser -----------------------------------------------------------------------------


def drive(
    run: Run, chromium: str, ui_url: str, question: str, answer_timeout_s: float, data_dir: Path
) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        calls: list[dict[str, Any]] = []

        def route(route: Any) -> None:
            host = urlsplit(route.request.url).hostname or ""
            if host in LOCAL_HOSTS:
                route.continue_()
            else:
                run.external[route.request.url] = "refused (offline run)"
                route.abort("internetdisconnected")

        def on_response(response: Any) -> None:
            path = urlsplit(response.url).path
            if path.startswith(("/_conversation", "/_debug", "/_connector")):
                calls.append(
                    {"t": round(time.monotonic() - run.started, 1), "method":
                     response.request.method, "path": path, "status": response.status,
                     "body": (response.request.post_data or "")[:2000]}
                )  # fmt: skip

        page.route("**/*", route)
        page.on("response", on_response)
        console: list[str] = []
        page.on(
            "console",
            lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
            else None,
        )  # fmt: skip
        run.seen["page_calls"] = calls
        frames: list[str] = []  # what the Playground's server pushed to the page

        def on_socket(ws: Any) -> None:
            ws.on("framereceived", lambda f: frames.append(f if isinstance(f, str) else f.decode()))

        page.on("websocket", on_socket)
        run.seen["frames"] = frames
        run.seen["console"] = console
        try:
            _drive(run, page, ui_url, question, answer_timeout_s, data_dir)
        except (PlaywrightError, Failed) as exc:
            run.fail(str(exc).splitlines()[0])
        finally:
            with contextlib.suppress(PlaywrightError):
                if run.failures:
                    page.screenshot(path=str(run.out / "failure.png"), full_page=True)
                    (run.out / "page.html").write_text(page.content())
            browser.close()


def citations_received(frames: list[str]) -> list[dict[str, Any]]:
    """The citations of the activities pushed to the page (as the Playground passed them on)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "position" in node and isinstance(node.get("appearance"), dict):
                found.append(
                    {
                        "position": node.get("position"),
                        "name": node["appearance"].get("name"),
                        "url": node["appearance"].get("url"),
                    }
                )
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for frame in frames:
        with contextlib.suppress(ValueError):
            walk(json.loads(frame))
    unique = {json.dumps(c, sort_keys=True): c for c in found}
    return list(unique.values())


def forwarded_invokes(frames: list[str]) -> list[dict[str, Any]]:
    """The feedback invokes the Playground sent to the bot, from its log stream to the page."""
    found = []
    for frame in frames:
        with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
            log = json.loads(frame)["log"]
            body = log["request"]["body"]
            if log.get("activityName") == "invoke" and body.get("name") == "message/submitAction":
                found.append({"activity": body, "response": log.get("response")})
    return found


def feedback_diagnosis(run: Run) -> str:
    invokes = forwarded_invokes(run.seen.get("frames", []))
    run.seen["feedback_invokes"] = invokes
    if not invokes:
        return "; the Playground sent the bot no message/submitAction invoke"
    activity = invokes[-1]["activity"]
    serve_log = run.out / "serve.log"
    ignored = serve_log.exists() and "teams.feedback_ignored" in serve_log.read_text()
    reply_to = activity.get("replyToId")
    return (
        f"; the Playground's message/submitAction invoke carried replyToId={reply_to!r}"
        f" (answered {invokes[-1]['response']})"
        + ("; serve.log: teams.feedback_ignored (not one of our answers)" if ignored else "")
    )


def messages(page: Any) -> list[dict[str, Any]]:
    return list(page.evaluate(MESSAGES_JS))


def _drive(
    run: Run, page: Any, ui_url: str, question: str, answer_timeout_s: float, data_dir: Path
) -> None:
    run.step = "open the playground"
    page.goto(ui_url, wait_until="domcontentloaded")
    box = page.locator('[role="textbox"][contenteditable="true"]').first
    box.wait_for(timeout=60_000)
    page.get_by_label("Message header").first.wait_for(timeout=60_000)  # the welcome
    welcome = messages(page)
    run.seen["before_question"] = [m["text"][:200] for m in welcome]
    run.mark("playground page ready")

    run.step = "ask"
    box.click()
    box.type(question)
    box.press("Enter")
    asked = time.monotonic()

    run.step = "wait for the answer"
    deadline = asked + answer_timeout_s
    answer: dict[str, Any] | None = None
    texts: list[str] = []  # the answer bubble's distinct texts while it grew
    stable_since = 0.0
    while time.monotonic() < deadline:
        msgs = messages(page)
        mine = [
            i for i, m in enumerate(msgs) if question in m["text"] and m["author"] != "Test Bot"
        ]
        after = [m for m in msgs[(mine[-1] + 1 if mine else len(welcome)) :] if m["author"]]
        bot = [m for m in after if m["author"] == "Test Bot"]
        if bot:
            current = bot[0]
            if "first_bot_text" not in run.timings:
                run.mark("first_bot_text")
                run.seen["first_bot_text"] = current["text"][:200]
            if not texts or texts[-1] != current["text"]:
                texts.append(current["text"])
                stable_since = time.monotonic()
            final = [m for m in bot if m["like"]]
            if (
                final
                and final[0]["text"] == current["text"]
                and (time.monotonic() - stable_since >= 3)
            ):
                answer = final[0]
                run.seen["bot_messages_after_question"] = [
                    {k: v for k, v in m.items() if k != "text"} | {"text": m["text"][:600]}
                    for m in bot
                ]
                break
        time.sleep(0.5)
    if answer is None:
        raise Failed(
            f"no answer with a feedback loop within {answer_timeout_s:.0f}s"
            + (f"; last text seen: {texts[-1][:200]!r}" if texts else "; no bot message at all")
        )
    run.mark("answer shown")
    run.seen["answer_text"] = answer["text"][:1200]
    run.seen["answer_texts_while_streaming"] = len(texts)
    run.seen["answer_ai_label"] = answer["ai_label"]
    run.seen["citation_markers"] = answer["citations"]
    bubble = page.locator(f'[data-pg-msg="{answer["index"]}"]')
    bubble.screenshot(path=str(run.out / "answer.png"))

    run.step = "citations"
    if not answer["citations"]:
        run.fail("the answer shows no citation marker")
    else:
        marker = bubble.locator('a[role="button"]', has_text=CITATION).first
        marker.hover()  # the Playground opens the reference preview on hover (or Enter)
        with contextlib.suppress(Exception):  # the preview: recorded, not asserted
            popup = page.locator(POPUP).first
            popup.wait_for(timeout=5_000)
            run.seen["citation_popup"] = popup.inner_text()[:600]
            page.screenshot(path=str(run.out / "citation.png"))
        page.keyboard.press("Escape")
    run.seen["citations_in_activity"] = citations_received(run.seen["frames"])

    run.step = "like"
    likes_before = len(run.seen["page_calls"])
    bubble.get_by_role("button", name="Like", exact=True).click()
    dialog = page.get_by_role("dialog")
    with contextlib.suppress(Exception):
        dialog.wait_for(timeout=10_000)
    if dialog.count():
        run.seen["feedback_form"] = dialog.first.inner_text()[:300]
        comment = dialog.locator("textarea")
        if comment.count():
            comment.first.fill("checked from the Agents Playground")
        dialog.get_by_role("button", name="Submit").click()
        thanks = page.get_by_role("dialog").filter(has_text="Thank you")
        with contextlib.suppress(Exception):
            thanks.wait_for(timeout=15_000)
            run.seen["feedback_thanks"] = " ".join(thanks.first.inner_text().split())
            thanks.get_by_role("button", name="Close").click()
    else:
        run.fail("clicking Like opened no feedback form")
    run.mark("like submitted")
    time.sleep(2)
    run.seen["feedback_calls"] = run.seen["page_calls"][likes_before:]

    run.step = "feedback store"
    stored: dict[str, Any] = {}
    until = time.monotonic() + 20
    while time.monotonic() < until:
        stored = stored_feedback(data_dir, question)
        if any(a["ratings"] for a in stored["answers"]):
            break
        time.sleep(1)
    run.seen["feedback_store"] = stored
    asked_answers = [a for a in stored.get("answers", []) if a["question"] == question]
    ups = [(a, r) for a in stored.get("answers", []) for r in a["ratings"] if r["kind"] == "up"]
    if len(asked_answers) != 1:
        run.fail(f"{len(asked_answers)} stored Teams answers to the question, expected 1")
    elif len(ups) != 1:
        run.fail(
            f"{len(ups)} active up ratings in the store, expected 1: {stored.get('counts')}"
            + feedback_diagnosis(run)
        )
    elif ups[0][0]["id"] != asked_answers[0]["id"]:
        run.fail("the up rating is for another answer than the one to the question")
    else:
        run.mark("up rating stored")


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "teams-playground")
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--version", default=DEFAULT_VERSION, help="the Playground's npm version")
    parser.add_argument("--answer-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)

    out: Path = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    run = Run(out=out)
    data_dir = Path(tempfile.mkdtemp(prefix="expertbot-playground-"))
    serve = playground = None
    playground_dir = out / "playground"
    playground_dir.mkdir()
    try:
        run.step = "install"
        ensure_playwright()
        chromium = ensure_chromium()
        binary = ensure_playground(args.cache, args.version)
        run.mark("installed")

        run.step = "sync"
        env = bot_env({})
        sync = subprocess.run(
            [sys.executable, "-m", "bot.cli", "--data-dir", str(data_dir), "sync",
             str(REPO / "examples" / "knowledge")],
            env=env, cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        (out / "sync.log").write_text(sync.stdout + sync.stderr)
        if sync.returncode != 0:
            raise Failed(f"sync exited with {sync.returncode} (sync.log)")
        run.seen["sync"] = (sync.stdout.strip().splitlines() or [""])[-1]
        run.mark("synced")

        run.step = "serve"
        port, ui_port = free_port(), free_port()
        serve = start(
            [sys.executable, "-m", "bot.cli", "--data-dir", str(data_dir), "serve",
             "--port", str(port)],
            out / "serve.log", bot_env({"EXPERTBOT_TEAMS__ANONYMOUS": "true"}), REPO,
        )  # fmt: skip
        run.step = "playground"
        playground = start(
            [str(binary), "-e", f"http://127.0.0.1:{port}/api/messages", "-c", "msteams",
             "-p", str(ui_port), "--dt"],
            out / "playground.out.log",
            {**os.environ, "TEAMSAPPTESTER_BROWSER": "none"}, playground_dir,
        )  # fmt: skip
        run.step = "serve"
        wait_http(f"http://127.0.0.1:{port}/readyz", serve, 600, "expertbot serve")
        run.mark("serve ready")
        run.step = "playground"
        wait_http(f"http://localhost:{ui_port}/", playground, 60, "agentsplayground")
        run.mark("playground ready")

        drive(
            run, chromium, f"http://localhost:{ui_port}/", args.question,
            args.answer_timeout, data_dir,
        )  # fmt: skip
    except Failed as exc:
        run.fail(str(exc))
    except subprocess.CalledProcessError as exc:
        run.fail(f"{' '.join(map(str, exc.cmd))} exited with {exc.returncode}")
    finally:
        stop(playground)
        stop(serve)
        for log in playground_dir.glob("devTools/*.log"):
            shutil.copy(log, out / log.name)
        if args.keep:
            run.seen["data_dir"] = str(data_dir)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    wall = round(time.monotonic() - run.started, 1)
    verdict = "FAIL" if run.failures else "PASS"
    report = {
        "verdict": verdict,
        "failures": run.failures,
        "wall_s": wall,
        "timings_s": run.timings,
        "question": args.question,
        "playground": f"{PACKAGE}@{args.version}",
        "external_requests": run.external,
        "seen": run.seen,
    }
    frames = run.seen.pop("frames", [])
    (out / "frames.jsonl").write_text("".join(f"{f}\n" for f in frames))
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print()
    print(f"{verdict}: Agents Playground ({PACKAGE}@{args.version}) against expertbot serve")
    print(f"  question:   {args.question}")
    if "answer_text" in run.seen:
        shown = " ".join(run.seen["answer_text"].split())
        print(f"  answer:     {shown[:160]}{'…' if len(shown) > 160 else ''}")
        print(f"  citations:  markers {run.seen.get('citation_markers')}")
        print(f"  in activity: {run.seen.get('citations_in_activity')}")
        print(f"  reference:  {' '.join(str(run.seen.get('citation_popup', '-')).split())[:160]}")
    store = run.seen.get("feedback_store")
    if store:
        print(f"  store:      {store.get('counts')}")
    for url, what in run.external.items():
        print(f"  offline:    {url} {what}")
    print(f"  timings:    {run.timings} (wall {wall}s)")
    for failure in run.failures:
        print(f"  failed at:  {failure}")
    print(f"  output:     {out}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
