"""Fuzzing where outside bytes come in: thousands of generated request bodies against the real
server (Slack's `POST /slack/events` through slack-bolt with real signatures; Teams'
`POST /api/messages` through the Agents SDK, anonymous), and generated files against the
document parsers and a real sync. Whatever comes in: never a 500, never a crash, never a hang —
refused with the status that says why, or acknowledged with nothing done.

Hypothesis draws the inputs from a fixed seed (`derandomize`): CI sees the same ones every run.
The servers are built once per test; Hypothesis runs in a worker thread and sends each request
on the test's event loop, where the server runs.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier
from structlog.testing import capture_logs

from base.database import make_engine, sqlite_url
from base.errors import DocumentError, DocumentSkipped
from bot.core.runtime import Core
from bot.server import Services, make_app
from bot.slack import ids
from bot.teams.config import MESSAGES_PATH, TeamsConfig
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.parsing import FORMATS, ParsedDocument, parse_document
from knowledge.runtime import Knowledge
from tests.helpers import HANDBOOK, ROOT, SECRET, SlackEnv, envelope, running_slack, settings_for
from tests.slack_fake import TEAM
from tests.teams_fake import FakeConnector, activity

T = TypeVar("T")

# Generated inputs: reproducible (a seed from the test's code), no example database.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
MAX_BODY = 16 * 1024  # server.max_body_bytes in these tests: a larger body gets 413
HANG_S = 5.0  # a parse, or a request, slower than this hangs (they take milliseconds)


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the test's event loop (where the server runs) from Hypothesis' thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)


def crashes(logs: list[MutableMapping[str, Any]]) -> list[str]:
    """Logged errors: a listener, a turn or a request that crashed."""
    return [
        f"{e.get('event')}: {e.get('error', '')}"
        for e in logs
        if e.get("log_level") in ("error", "critical", "exception")
    ]


# -- JSON and text ----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
odd_values = st.recursive(  # what a field may hold instead of the right JSON type
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def nested(n: int, kind: str) -> str:
    """JSON nested `n` deep: deeper than a JSON parser recurses."""
    return "[" * n + "]" * n if kind == "list" else '{"a":' * n + "1" + "}" * n


deep_json = st.builds(nested, st.integers(900, 2500), st.sampled_from(["list", "object"]))


def not_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return True
    return False


# -- Slack --------------------------------------------------------------------------------------

# Fields the Slack payload check and bolt read: random keys stay clear of them, so that a
# "clean" payload of an unknown type is exactly that.
SLACK_FIELDS = {
    "type", "event", "authorizations", "actions", "view", "message", "container", "state",
    "user", "channel", "team", "command", "user_id", "channel_id", "payload", "ssl_check",
    "callback_id", "trigger_id", "response_url", "enterprise", "enterprise_id", "team_id",
    "is_enterprise_install", "is_ext_shared_channel", "response_urls", "function_data",
    "bot_access_token", "function_execution_id", "token", "challenge", "api_app_id",
    "assistant_thread", "previous_message", "item", "thread_ts", "view_id", "private_metadata",
}  # fmt: skip
OUR_IDS = "expertbot_"  # the prefix of our action, shortcut and view ids (bot/slack/ids.py)
HANDLED_EVENTS = {"app_mention", "message", "reaction_added", "reaction_removed"}
SLACK_PAYLOAD_TYPES = [  # what bolt knows; with random contents, none reaches a listener of ours
    "block_actions", "block_suggestion", "interactive_message", "dialog_submission",
    "dialog_cancellation", "dialog_suggestion", "shortcut", "message_action",
    "view_submission", "view_closed", "workflow_step_edit", "event_callback", "app_rate_limited",
]  # fmt: skip
OTHER_EVENTS = [  # real event types the bot subscribes to none of
    "channel_created", "team_join", "app_home_opened", "file_shared", "member_joined_channel",
    "pin_added", "emoji_changed", "user_change", "app_uninstalled", "tokens_revoked",
    "assistant_thread_started", "function_executed", "workflow_step_execute",
]  # fmt: skip

free_keys = st.text(max_size=15).filter(lambda k: k not in SLACK_FIELDS)
clean_fields = st.dictionaries(free_keys, json_values, max_size=5)
unknown_event_types = st.sampled_from(OTHER_EVENTS) | st.text(min_size=1, max_size=30).filter(
    lambda t: t not in HANDLED_EVENTS
)
unknown_payload_types = st.text(min_size=1, max_size=30).filter(
    lambda t: t not in SLACK_PAYLOAD_TYPES and t not in ("url_verification", "ssl_check")
)


@dataclass(frozen=True)
class SlackCase:
    """A request body, its content type, and the statuses the spec allows for it signed."""

    what: str
    body: str
    content_type: str = "application/json"
    allowed: frozenset[int] = frozenset({400})


def slack_case(
    what: str, allowed: set[int], content_type: str = "application/json"
) -> Callable[[str], SlackCase]:
    return lambda body: SlackCase(what, body, content_type, frozenset(allowed))


def _envelope(event: dict[str, Any], drop: list[str], junk: dict[str, Any]) -> dict[str, Any]:
    body = envelope(event, "EvFuzz") | junk
    for key in drop:
        body.pop(key, None)
    return body


@st.composite
def envelopes(draw: st.DrawFn) -> SlackCase:
    """An Events API callback of a type nobody handles: clean (200), with its `event` made
    odd (400), or with other fields odd or missing (acknowledged, or refused: 200 or 400)."""
    event: dict[str, Any] = {"type": draw(unknown_event_types), "event_ts": "1700000000.000100"}
    event |= draw(st.dictionaries(free_keys, json_values, max_size=4))
    how = draw(st.sampled_from(["clean", "odd event", "odd fields"]))
    if how == "clean":
        drop = draw(st.lists(st.sampled_from(["event_id", "event_time", "token", "api_app_id"])))
        return SlackCase(
            "an unknown event", json.dumps(_envelope(event, drop, {})), allowed=frozenset({200})
        )
    if how == "odd event":
        odd = draw(st.sampled_from(["not an object", "no type", "odd type", "missing"]))
        body = _envelope(event, [], {})
        if odd == "not an object":
            body["event"] = draw(odd_values.filter(lambda v: not isinstance(v, dict)))
        elif odd == "no type":
            del body["event"]["type"]
        elif odd == "odd type":
            body["event"]["type"] = draw(odd_values.filter(lambda v: not isinstance(v, str)))
        else:
            del body["event"]
        return SlackCase(f"an event_callback whose event is {odd}", json.dumps(body))
    keys = [
        "token",
        "team_id",
        "api_app_id",
        "event_id",
        "event_time",
        "authorizations",
        "type",
        "is_ext_shared_channel",
        "enterprise_id",
        "event_context",
    ]
    junk = draw(st.dictionaries(st.sampled_from(keys), odd_values, min_size=1, max_size=3))
    drop = draw(st.lists(st.sampled_from(keys), max_size=2))
    return SlackCase(
        "an envelope with odd fields",
        json.dumps(_envelope(event, drop, junk)),
        allowed=frozenset({200, 400}),
    )


@st.composite
def interactions(draw: st.DrawFn) -> SlackCase:
    """A form with `payload=` JSON: of an unknown type (200), of a type bolt knows with random
    contents (acknowledged or refused), without a type or not an object or not JSON (400)."""
    how = draw(
        st.sampled_from(["unknown type", "known type", "no type", "not an object", "not JSON"])
    )
    form: dict[str, str] = draw(
        st.dictionaries(
            free_keys.filter(lambda k: k != "payload"), st.text(max_size=10), max_size=2
        )
    )
    allowed = {400}
    if how == "unknown type":
        payload: Any = draw(clean_fields) | {"type": draw(unknown_payload_types)}
        allowed = {200}
    elif how == "known type":
        fields = st.sampled_from(sorted(SLACK_FIELDS)) | st.text(max_size=10)
        payload = draw(
            st.dictionaries(fields, json_values, max_size=6).filter(
                lambda p: OUR_IDS not in json.dumps(p)  # our buttons, shortcut, modal
            )
        ) | {"type": draw(st.sampled_from(SLACK_PAYLOAD_TYPES))}
        allowed = {200, 400}
    elif how == "no type":
        payload = draw(clean_fields)
    elif how == "not an object":
        payload = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    if how == "not JSON":
        form["payload"] = draw(st.text(max_size=40).filter(not_json))
    else:
        form["payload"] = json.dumps(payload)
    content_type = "application/x-www-form-urlencoded"
    return SlackCase(
        f"an interaction payload: {how}", urlencode(form), content_type, frozenset(allowed)
    )


@st.composite
def commands(draw: st.DrawFn) -> SlackCase:
    """A slash command form: another app's command (200, nothing done), ours with text that
    is no subcommand (200, the help in the response), either without who sent it (400)."""
    ours = draw(st.booleans())
    name = (
        ids.DEFAULT_COMMAND
        if ours
        else draw(st.text(min_size=1, max_size=20).filter(lambda c: c != ids.DEFAULT_COMMAND))
    )
    words = st.text(max_size=30).filter(
        lambda t: (
            t.strip().partition(" ")[0].lower()
            not in ("ask", "status", "sync", "retrain", "rollback")
        )
    )
    form = {"command": name, "text": draw(words), "team_id": TEAM}
    form |= draw(
        st.dictionaries(
            st.sampled_from(["user_id", "channel_id", "user_name", "response_url", "trigger_id"]),
            st.text(max_size=12),
            max_size=5,
        )
    )
    form |= draw(
        st.dictionaries(
            free_keys.filter(lambda k: k != "payload"), st.text(max_size=10), max_size=2
        )
    )
    complete = all(isinstance(form.get(k), str) for k in ("user_id", "channel_id"))
    allowed = {200} if complete else {400}
    what = f"{'our' if ours else 'another'} command{'' if complete else ' without user_id or channel_id'}"
    return SlackCase(what, urlencode(form), "application/x-www-form-urlencoded", frozenset(allowed))


CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "",
     "application/json; charset=utf-8", "application/json; charset=bogus",
     "application/x-www-form-urlencoded; charset=latin-1", "multipart/form-data; boundary=x"]
)  # fmt: skip

signed_bodies = st.one_of(
    # Not JSON, sent as JSON.
    st.text(max_size=300).filter(not_json).map(slack_case("text that is not JSON", {400})),
    # JSON, but no object; or no object once parsed by any depth.
    json_values.filter(lambda v: not isinstance(v, dict))
    .map(json.dumps)
    .map(slack_case("JSON that is not an object", {400})),
    deep_json.map(slack_case("JSON nested too deeply", {400})),
    # Objects: without a type (not a Slack payload), or of a type nobody handles.
    clean_fields.map(json.dumps).map(slack_case("a JSON object without a type", {400})),
    st.builds(lambda f, t: json.dumps(f | {"type": t}), clean_fields, unknown_payload_types).map(
        slack_case("a JSON payload of an unknown type", {200})
    ),
    envelopes(),
    interactions(),
    commands(),
    # Whatever text, under whatever content type: refused or acknowledged, never more.
    st.builds(
        lambda t, c: SlackCase("any text", t, c, frozenset({200, 400})),
        st.text(max_size=300),
        CONTENT_TYPES,
    ),
)


# What a header value may hold on the wire (no control characters).
header_chars = st.characters(codec="latin-1", exclude_categories=["Cc"])


def sign(body: bytes, *, timestamp: str, secret: str = SECRET) -> str:
    signature = SignatureVerifier(secret).generate_signature(
        timestamp=timestamp, body=body.decode()
    )
    assert signature is not None
    return signature


@st.composite
def bad_signatures(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A body (any bytes, or a payload the bot would act on) and headers that do not sign it
    with our secret: none, another secret's, an old or odd timestamp, another body's, junk."""
    body: bytes = draw(
        st.binary(max_size=300)
        | st.text(max_size=300).map(str.encode)
        | envelopes().map(lambda c: c.body.encode())
        | commands().map(lambda c: c.body.encode())
    )
    now = int(time.time())
    text = body.decode("utf-8", "replace")
    how = draw(
        st.sampled_from(
            [
                "none",
                "other secret",
                "stale",
                "future",
                "odd timestamp",
                "other body",
                "junk",
                "no timestamp",
            ]
        )
    )
    stamp = str(now)
    headers = {"Content-Type": draw(CONTENT_TYPES)}
    if how == "none":
        return body, headers
    if how == "other secret":
        signature = SignatureVerifier(
            draw(st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and s != SECRET))
        ).generate_signature(timestamp=stamp, body=text)
    elif how in ("stale", "future"):
        stamp = str(now + (1 if how == "future" else -1) * draw(st.integers(301, 10**9)))
        signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=text)
    elif how == "odd timestamp":
        stamp = draw(
            st.text(header_chars, max_size=25).filter(lambda s: not (s.isascii() and s.isdigit()))
            | st.just("9" * 5000)
        )
        signature = "v0=" + "0" * 64
    elif how == "other body":
        other = draw(st.text(max_size=50).filter(lambda t: t != text))
        signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=other)
    elif how == "junk":
        signature = draw(st.text(header_chars, max_size=80))
    else:  # signed, but no timestamp to check it with
        signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=text)
        assert signature is not None
        return body, headers | {"X-Slack-Signature": signature}
    assert signature is not None
    return body, headers | {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


@dataclass
class SlackFuzz:
    """The real server with Slack configured, driven from Hypothesis' thread."""

    env: SlackEnv
    loop: asyncio.AbstractEventLoop
    logs: list[MutableMapping[str, Any]]  # everything logged while the test runs
    baseline: int = 0  # Web API calls before the fuzzing (bolt's auth.test, once)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        started = time.monotonic()
        response = await self.env.client.post(ids.EVENTS_PATH, data=body, headers=headers)
        text = await response.text()
        assert time.monotonic() - started < HANG_S, "the request hung"
        return response.status, text

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        logged = len(self.logs)
        status, text = run_on(self.loop, self._post(body, headers))
        assert crashes(self.logs[logged:]) == []
        return status, text

    def signed(
        self, body: str, content_type: str, extra: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """POST `body` signed with our secret, as Slack signs it."""
        raw = body.encode()
        stamp = str(int(time.time()))
        headers = {
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(raw, timestamp=stamp),
        }
        if content_type:
            headers["Content-Type"] = content_type
        return self.post(raw, headers | (extra or {}))

    def assert_nothing_done(self) -> None:
        calls = self.env.slack.calls[self.baseline :]
        assert calls == [], f"Web API calls: {[c.method for c in calls]}"
        assert self.env.questions == []


@pytest.fixture
async def slack(clean_environ: Path, tiny_phi3: Path, embedder: Any, aiohttp_client: Any) -> Any:
    """The server with Slack; afterwards, nothing was sent to Slack and nothing crashed."""
    settings = settings_for(clean_environ, str(tiny_phi3))
    settings.server.max_body_bytes = MAX_BODY
    with capture_logs() as logs:
        async with running_slack(settings, embedder, aiohttp_client) as env:
            fuzz = SlackFuzz(env, asyncio.get_running_loop(), logs)
            # Bolt asks Slack who the bot is (auth.test) on its first request, once.
            body = json.dumps(envelope({"type": "team_join"}, "Ev0"))
            await asyncio.to_thread(fuzz.signed, body, "application/json")
            fuzz.baseline = len(env.slack.calls)
            yield fuzz
            await asyncio.sleep(0.2)  # whatever started in the background has called by now
            fuzz.assert_nothing_done()
    assert crashes(logs) == []


async def test_slack_answers_every_signed_body_with_200_or_400_and_does_nothing(
    slack: SlackFuzz,
) -> None:
    retries = st.dictionaries(
        st.sampled_from(["X-Slack-Retry-Num", "X-Slack-Retry-Reason", "X-Request-Id"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
        max_size=2,
    )

    @settings(FUZZ, max_examples=800)
    @given(case=signed_bodies, extra=retries)
    def check(case: SlackCase, extra: dict[str, str]) -> None:
        status, text = slack.signed(case.body, case.content_type, extra)
        assert status in case.allowed, f"{case.what}: {status} {text[:200]}"
        if case.what == "our command":  # answered with the help, in the response
            assert "`ask <question>`" in text, text
        slack.assert_nothing_done()

    await asyncio.to_thread(check)


async def test_slack_refuses_what_is_not_signed_with_401_and_what_is_too_large_with_413(
    slack: SlackFuzz,
) -> None:
    @settings(FUZZ, max_examples=400)
    @given(request=bad_signatures())
    def unsigned(request: tuple[bytes, dict[str, str]]) -> None:
        body, headers = request
        status, text = slack.post(body, headers)
        assert status == 401, f"{status} {text[:200]}"
        slack.assert_nothing_done()

    @settings(FUZZ, max_examples=60)
    @given(
        size=st.integers(MAX_BODY + 1, 2 * MAX_BODY),
        signed=st.booleans(),
        fill=st.sampled_from(["x", "{", "é"]),
    )
    def too_large(size: int, signed: bool, fill: str) -> None:
        body = fill * (size // len(fill.encode()) + 1)
        if signed:
            status, _ = slack.signed(body, "application/json")
        else:
            status, _ = slack.post(body.encode(), {"Content-Type": "application/json"})
        assert status == 413
        slack.assert_nothing_done()

    await asyncio.to_thread(unsigned)
    await asyncio.to_thread(too_large)


async def test_slack_signed_bodies_that_are_no_slack_payload_get_400(slack: SlackFuzz) -> None:
    """Found by the fuzzing: each of these was a 500 (bolt failing on it), or a 404."""
    event = envelope({"type": "team_join"}, "Ev1")
    form = "application/x-www-form-urlencoded"
    refused = [
        ("", "application/json"),
        ("[1, 2]", "application/json"),
        ("null", "application/json"),
        ('"text"', "application/json"),
        (nested(2000, "list"), "application/json"),
        (json.dumps({"a": 1}), "application/json"),
        (json.dumps(event | {"event": [1]}), "application/json"),
        (json.dumps(event | {"authorizations": 5}), "application/json"),
        (urlencode({"payload": "[1]"}), form),
        (urlencode({"payload": json.dumps({"type": "block_actions", "actions": "x"})}), form),
        (urlencode({"payload": json.dumps({"type": "view_submission", "view": "x"})}), form),
        (urlencode({"command": ids.DEFAULT_COMMAND, "text": "help"}), form),
    ]
    for body, content_type in refused:
        status, text = await asyncio.to_thread(slack.signed, body, content_type)
        assert status == 400, body[:80]
        assert json.loads(text)["error"].startswith("malformed request body: ")
    slack.assert_nothing_done()


async def test_slack_unsigned_requests_get_401_whatever_they_hold(slack: SlackFuzz) -> None:
    """Found by the fuzzing: bytes that are not UTF-8, an unsigned body that is no JSON
    object, a timestamp that is no number, a non-ASCII signature were each a 500."""
    now = str(int(time.time()))
    requests = [
        (b"\x80", {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (b"{}", {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}),
        (b"{}", {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": "v0=\u00e9"}),
    ]
    for body, headers in requests:
        status, _ = await asyncio.to_thread(slack.post, body, headers)
        assert status == 401, (body, headers)
    slack.assert_nothing_done()


async def test_slack_acknowledges_what_no_listener_wants_with_200(slack: SlackFuzz) -> None:
    """Found by the fuzzing: bolt answered these 404, and Slack sends again what gets no 2xx."""
    form = "application/x-www-form-urlencoded"
    command = {"command": "/another-app", "text": "hi", "user_id": "U1", "channel_id": "C1"}
    action = {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "a1"}]}
    event = envelope({"type": "channel_created", "channel": {"id": "C9"}}, "Ev2")
    acknowledged = [
        (json.dumps(event), "application/json"),
        (json.dumps({"type": "app_rate_limited", "minute_rate_limited": 1}), "application/json"),
        (urlencode({"payload": json.dumps(action)}), form),
        (urlencode(command), form),
    ]
    for body, content_type in acknowledged:
        status, text = await asyncio.to_thread(slack.signed, body, content_type)
        assert (status, text) == (200, ""), body[:80]
    slack.assert_nothing_done()


# -- Teams --------------------------------------------------------------------------------------

ACTIVITY_FIELDS = {
    "type", "id", "channelId", "serviceUrl", "from", "recipient", "conversation", "channelData",
    "timestamp", "text", "entities", "attachments", "value", "name", "replyToId", "locale",
    "membersAdded", "membersRemoved", "action", "textFormat", "deliveryMode", "relatesTo",
    "localTimestamp", "callerId", "code", "label", "valueType", "topicName", "historyDisclosed",
    "reactionsAdded", "reactionsRemoved", "expiration", "importance", "summary", "speak",
    "inputHint", "suggestedActions", "attachmentLayout", "semanticAction", "listenFor",
    "textHighlights", "localTimezone", "tenantId",
}  # fmt: skip
HANDLED_ACTIVITIES = {"message", "invoke", "conversationupdate"}  # what the bot acts on
OTHER_ACTIVITIES = [
    "typing", "endOfConversation", "event", "messageUpdate", "messageDelete", "messageReaction",
    "installationUpdate", "deleteUserData", "contactRelationUpdate", "suggestion", "trace",
    "handoff", "command", "commandResult",
]  # fmt: skip
unknown_activity_types = st.sampled_from(OTHER_ACTIVITIES) | st.text(
    min_size=1, max_size=30
).filter(lambda t: t.strip() and t.lower() not in HANDLED_ACTIVITIES)
PARTY_FIELDS = ["id", "name", "aadObjectId", "tenantId", "conversationType", "tenant", "role"]
NEEDED = ["channelId", "serviceUrl", "from", "recipient", "conversation", "id", "timestamp"]
ODD_URLS = ["x", "http://", "ftp://host/", "http://[::1", "//host/path", "mailto:a@b", "http:x"]
activity_keys = st.text(max_size=15).filter(lambda k: k not in ACTIVITY_FIELDS)


@dataclass(frozen=True)
class TeamsCase:
    what: str
    body: bytes
    content_type: str = "application/json"
    allowed: frozenset[int] = frozenset({400})


@st.composite
def activities(draw: st.DrawFn, service_url: str) -> TeamsCase:
    """An activity of a type the bot does not act on: clean (accepted, nothing done), or with
    fields dropped, made odd or junk added (accepted or refused as no activity)."""
    body = activity(None, service_url=service_url) | {"type": draw(unknown_activity_types)}
    body |= draw(st.dictionaries(activity_keys, json_values, max_size=3))
    how = draw(st.sampled_from(["clean", "mutated"]))
    if how == "mutated":
        for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=3)):
            if key != "type":
                body.pop(key, None)
        fields = st.sampled_from(sorted(ACTIVITY_FIELDS - {"type"}))
        body |= draw(st.dictionaries(fields, odd_values, max_size=3))
        body |= draw(st.dictionaries(st.sampled_from(NEEDED), odd_values, max_size=2))
        parties = st.sampled_from(["from", "recipient", "conversation", "channelData"])
        for key in draw(st.lists(parties, max_size=2)):
            if isinstance(body.get(key), dict):
                inner = st.sampled_from(PARTY_FIELDS)
                body[key] = body[key] | draw(st.dictionaries(inner, odd_values, max_size=2))
    if draw(st.integers(0, 3)) == 0:  # where the bot would reply to
        body["serviceUrl"] = draw(st.sampled_from(ODD_URLS) | st.text(max_size=30))
        how = "mutated"
    allowed = {200, 202} if how == "clean" else {200, 202, 400}
    return TeamsCase(
        f"a {how} activity of type {body['type']!r}",
        json.dumps(body).encode(),
        allowed=frozenset(allowed),
    )


teams_bodies = st.one_of(
    st.binary(max_size=300)
    .filter(lambda b: not_json(b.decode("utf-8", "replace")))
    .map(lambda b: TeamsCase("bytes that are not JSON", b)),
    st.text(max_size=300)
    .filter(not_json)
    .map(lambda t: TeamsCase("text that is not JSON", t.encode())),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: TeamsCase("JSON that is not an object", json.dumps(v).encode())
    ),
    st.dictionaries(activity_keys, json_values, max_size=6).map(
        lambda v: TeamsCase("an object that is no activity", json.dumps(v).encode())
    ),
    deep_json.map(lambda t: TeamsCase("JSON nested too deeply", t.encode())),
    st.builds(
        lambda v, c: TeamsCase(
            "JSON under an unknown charset", json.dumps(v).encode(), c, frozenset({400})
        ),
        json_values,
        st.just("application/json; charset=bogus"),
    ),
)


@dataclass
class TeamsFuzz:
    """The real server with Teams configured (anonymous), driven from Hypothesis' thread."""

    connector: FakeConnector
    client: Any
    services: Services
    loop: asyncio.AbstractEventLoop
    logs: list[MutableMapping[str, Any]]  # everything logged while the test runs

    async def _post(self, case: TeamsCase) -> tuple[int, str]:
        started = time.monotonic()
        headers = {"Content-Type": case.content_type}
        response = await self.client.post(MESSAGES_PATH, data=case.body, headers=headers)
        text = await response.text()
        assert time.monotonic() - started < HANG_S, "the request hung"
        return response.status, text

    def post(self, case: TeamsCase) -> tuple[int, str]:
        logged = len(self.logs)
        status, text = run_on(self.loop, self._post(case))
        assert crashes(self.logs[logged:]) == [], case.what  # a turn that failed
        return status, text

    def assert_nothing_done(self) -> None:
        sent = self.connector.sent
        assert sent == [], f"sent to Teams: {[(s.method, s.path) for s in sent]}"


@pytest.fixture
async def teams(clean_environ: Path, tiny_phi3: Path, embedder: Any, aiohttp_client: Any) -> Any:
    """The server with Teams (anonymous); afterwards, nothing crashed."""
    connector = FakeConnector()
    await connector.start()
    settings = settings_for(clean_environ, str(tiny_phi3))
    settings.server.max_body_bytes = MAX_BODY
    settings.teams = TeamsConfig(anonymous=True)
    core = Core.build(settings, embedder=embedder)
    await core.start()
    services = await Services.start(settings, core)
    client = await aiohttp_client(make_app(services))
    try:
        with capture_logs() as logs:
            yield TeamsFuzz(connector, client, services, asyncio.get_running_loop(), logs)
            await services.teams.drain()
        assert crashes(logs) == []
    finally:
        await core.close()
        await connector.close()


async def test_teams_refuses_what_is_no_activity_and_ignores_unknown_activities(
    teams: TeamsFuzz,
) -> None:
    @settings(FUZZ, max_examples=600)
    @given(case=teams_bodies | activities(teams.connector.url))
    def check(case: TeamsCase) -> None:
        status, text = teams.post(case)
        assert status in case.allowed, f"{case.what}: {status} {text[:200]}"
        teams.assert_nothing_done()

    await asyncio.to_thread(check)
    await teams.services.teams.drain()
    teams.assert_nothing_done()


async def test_teams_bodies_nested_too_deeply_or_in_an_unknown_charset_get_400(
    teams: TeamsFuzz,
) -> None:
    """Found by the fuzzing: both were a 500."""
    for case in [
        TeamsCase("a deep list", nested(3000, "list").encode()),
        TeamsCase("a deep object", nested(2000, "object").encode()),
        TeamsCase("an unknown charset", b"{}", "application/json; charset=bogus"),
    ]:
        status, text = await asyncio.to_thread(teams.post, case)
        assert (status, json.loads(text)) == (400, {"error": "the body is not JSON"}), case.what
    teams.assert_nothing_done()


async def test_an_activity_the_sdk_cannot_run_a_turn_for_gets_400(teams: TeamsFuzz) -> None:
    """Found by the fuzzing: a serviceUrl that is no URL and an empty channelId were a 500;
    the others a failed turn (logged with its traceback) answered 202."""
    changes: list[tuple[dict[str, Any], str]] = [
        ({"serviceUrl": "x"}, "serviceUrl is not an http(s) URL"),
        ({"serviceUrl": "http://[::1"}, "serviceUrl is not an http(s) URL"),
        ({"channelId": None}, "no channelId"),
        ({"channelId": ""}, "not a valid activity: value must be a non empty string"),
        ({"from": {"name": "Erin"}}, "no from id"),
        ({"recipient": None}, "no recipient id"),
    ]
    for change, reason in changes:
        body = activity(None, service_url=teams.connector.url) | {"type": "somethingNew"}
        case = TeamsCase(reason, json.dumps(body | change).encode())
        status, text = await asyncio.to_thread(teams.post, case)
        assert status == 400 and reason in json.loads(text)["error"], (change, text)
    teams.assert_nothing_done()


# -- documents ----------------------------------------------------------------------------------

EXTENSIONS = [*sorted(FORMATS), ".MD", ".Html", ".json", ".docx", ".png", ""]


def parse_or_refuse(doc_id: str, data: bytes) -> ParsedDocument | DocumentError:
    """Parsed, or refused with a project error (what a sync counts as a skipped or failed
    file); any other exception escapes and fails the test. Never slower than HANG_S."""
    started = time.monotonic()
    try:
        result: ParsedDocument | DocumentError = parse_document(doc_id, data)
    except DocumentError as exc:
        result = exc
    took = time.monotonic() - started
    assert took < HANG_S, f"parsing {len(data)} bytes of {doc_id} took {took:.1f}s"
    if isinstance(result, ParsedDocument):  # a title, and sections that hold text
        assert result.title.strip() and result.sections
        assert all(s.text.strip() for s in result.sections)
    else:
        assert str(result), "a refusal says why"
    return result


OFFICE = ROOT / "tests" / "assets" / "office"


def seed(doc_id: str) -> tuple[str, bytes]:
    return doc_id, (HANDBOOK / doc_id).read_bytes()


SEEDS = [
    seed("it/vpn-setup.md"),
    seed("it/wifi-and-printers.txt"),
    seed("security/incident-response.rst"),
    seed("it/laptop-and-equipment.html"),
    seed("finance/travel-and-expense-policy.pdf"),
    *[
        (name, (OFFICE / name).read_bytes())
        for name in [
            "expense-policy-lo.docx",
            "sales-kickoff-lo.pptx",
            "on-call-roster-lo.xlsx",
            "price-list.csv",
        ]
    ],
    (
        "notes.md",
        b"---\ntitle: Notes\naccess: restricted\nallowed: [C1, finance]\n---\n# A\n\n## B ##\ntext [link](u)\n",
    ),
    (
        "table.html",
        b"<html><head><title>T</title><meta name='access' content='private'></head><body><h1>H</h1><table><tr><th>a<td>b<tr><td>c</table><ul><li>x<li>y</ul></body></html>",
    ),
]


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A small valid file, truncated, with bytes flipped, inserted, deleted or repeated."""
    doc_id, original = draw(st.sampled_from(SEEDS))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "repeat"]))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 200))]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 100))] * draw(st.integers(1, 20))
    return doc_id, bytes(data)


UNITS = [
    " ", "\t", " \t", "#", "# ", "[", "](", "-", "- ", "=", "*", "`", ":", ":a", "\n", "\r", "\n \n",
    "<", "</", "&", "<!--", "<tr>", "<td>x", "<tr><td>x", "<th>", "<h2>x", "<h1>", "<li>", "<p>",
    "<b>", "<table>", "---\n", "```\n", "é", "\x00", "\x0c",
]  # fmt: skip
TEMPLATES = [
    ("runs.md", "# x{run}y\n\nbody\n"),
    ("runs.md", "# {run}\n\nbody\n"),
    ("runs.md", "title{run}\n===\n\nbody\n"),
    ("runs.md", "---\ntitle: t\nallowed: [{run}]\n---\nbody\n"),
    ("runs.md", "---\n{run}x\n---\nbody\n"),
    ("runs.md", "text{run}text\n"),
    ("runs.txt", "a{run}b\n\nc\n"),
    ("runs.rst", "x{run}y\n" + "=" * 8 + "\n\nbody\n"),
    ("runs.rst", "Title\n=====\n\n{run}\n"),
    ("runs.html", "<table>{run}</table><p>after</p>"),
    ("runs.html", "<h1>{run}</h1><p>body</p>"),
    ("runs.html", "<ul>{run}<li>last</ul>"),
    ("runs.html", "<p>a{run}b</p>"),
]  # fmt: skip
runs = st.builds(
    lambda template, unit, n: (template[0], template[1].replace("{run}", unit * n).encode()),
    st.sampled_from(TEMPLATES),
    st.sampled_from(UNITS),
    st.integers(1, 3000),
)
random_files = st.tuples(
    st.sampled_from(EXTENSIONS).map(lambda ext: f"docs/file{ext}"),
    st.binary(max_size=3000)
    | st.builds(
        lambda t, enc: t.encode(enc, "replace"),
        st.text(max_size=1000),
        st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252", "utf-8-sig"]),
    ),
)


@given(file=random_files)
@settings(FUZZ, max_examples=600)
def test_random_bytes_under_every_extension_are_parsed_or_refused_with_a_reason(
    file: tuple[str, bytes],
) -> None:
    parse_or_refuse(*file)


@given(file=mutated_files())
@settings(FUZZ, max_examples=500)
def test_damaged_files_are_parsed_or_refused_with_a_reason(file: tuple[str, bytes]) -> None:
    parse_or_refuse(*file)


@given(file=runs)
@settings(FUZZ, max_examples=300)
def test_long_runs_of_markup_never_hang_the_parser(file: tuple[str, bytes]) -> None:
    parse_or_refuse(*file)


def parsed_within(doc_id: str, data: bytes, seconds: float) -> ParsedDocument:
    started = time.monotonic()
    parsed = parse_document(doc_id, data)
    took = time.monotonic() - started
    assert took < seconds, f"{took:.1f}s"
    return parsed


def test_a_markdown_heading_with_a_run_of_blanks_inside_is_read_at_once() -> None:
    """Found by the fuzzing: the heading regex backtracked cubically, a minute for 2,000
    spaces (a heading padded to align, say)."""
    heading = "Travel" + " " * 2000 + "\tpolicy  ##"
    parsed = parsed_within("travel.md", f"# {heading}\n\nBook through the portal.\n".encode(), 2)
    assert parsed.title == heading.removesuffix("  ##")
    assert [s.heading_path for s in parsed.sections] == [(parsed.title,)]


def test_a_table_whose_rows_are_left_open_is_read_once_row_by_row() -> None:
    """Found by the fuzzing: rows and cells without end tags (valid HTML) nest each row in the
    cell before it; each row then read all later ones again, cubic: a minute for 500 rows."""
    rows = "".join(f"<tr><td>room {n}" for n in range(600))
    page = f"<h1>Rooms</h1><table>{rows}</table><p>Book at the desk.</p>".encode()
    [section] = parsed_within("rooms.html", page, 2).sections
    assert section.text.count("room ") == 600
    assert (
        section.text.index("room 1 ") < section.text.index("room 2 ") < section.text.index("Book")
    )


def test_text_padded_with_a_long_run_of_blanks_is_read_at_once() -> None:
    """Found while building the fuzzing: trailing blanks were stripped by a regex that
    rescanned the run from each of its characters: 200,000 blanks took a minute."""
    data = b"Opening hours" + b" " * 200_000 + b"9 to 5.\n"
    [section] = parsed_within("hours.txt", data, 2).sections
    assert section.text.startswith("Opening hours ") and section.text.endswith("9 to 5.")


def test_front_matter_nested_too_deeply_is_a_document_error() -> None:
    """Found by the fuzzing: YAML nested beyond the parser's recursion raised RecursionError,
    which a sync reported as a parser crash."""
    with pytest.raises(DocumentError, match="nested too deeply"):
        parse_document("deep.md", b"---\n" + b"- " * 10_000 + b"x\n---\n# T\n\nbody\n")


# -- a sync over bad files ----------------------------------------------------------------------

GOOD = b"# Parking\n\nVisitor parking is on level -2, bay 14 to 30; ask reception for a pass.\n"
not_an_access = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12).map(
    lambda w: "x" + w
)
bad_files = st.tuples(  # one of each kind of bad file, each time
    st.tuples(
        st.sampled_from(["notes.md", "readme.txt", "guide.rst", "page.html"]),
        st.binary(max_size=400).map(lambda b: b + b"\x00"),
    ),
    st.tuples(st.just("blank.md"), st.text(" \t\n\r", max_size=20).map(str.encode)),
    st.tuples(st.sampled_from(["data.json", "sheet.xlsx", "Makefile"]), st.binary(max_size=200)),
    st.tuples(st.just("report.pdf"), st.binary(max_size=400).map(lambda b: b"%PDF-1.7\n" + b)),
    st.tuples(
        st.just("scan.pdf"),
        st.binary(max_size=300).filter(lambda b: not b.lstrip().startswith(b"%PDF")),
    ),
    st.tuples(
        st.just("deep.md"),
        # Deeper than any recursion limit (Hypothesis raises it while a test runs).
        st.integers(6000, 9000).map(lambda n: b"---\n" + b"- " * n + b"x\n---\n# T\n\nbody\n"),
    ),
    st.tuples(
        st.just("label.md"),
        not_an_access.map(lambda a: f"---\naccess: {a}\n---\n# T\n\nbody\n".encode()),
    ),
)


@given(files=bad_files)
@settings(
    FUZZ,
    max_examples=4,
    suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture],
)
def test_a_sync_indexes_the_good_file_and_counts_each_bad_one_with_its_reason(
    embedder: Any, files: tuple[tuple[str, bytes], ...]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, data_dir = Path(tmp) / "docs", Path(tmp) / "data"
        source.mkdir()
        data_dir.mkdir()
        (source / "parking.md").write_bytes(GOOD)
        for name, data in files:
            (source / name).write_bytes(data)
        report, found = asyncio.run(sync_and_search(source, data_dir, embedder))
    assert report.status == "ok" and report.added == 1
    assert report.skipped + report.failed == len(files)
    refused = {
        i.doc_id: (i.action, i.reason or "")
        for i in report.items
        if i.action in ("skipped", "failed")
    }
    for name, data in files:
        action, reason = refused[name]
        assert "parser error" not in reason, f"{name}: {reason}"  # a reason the parser gave
        expected = parse_or_refuse(name, data)
        assert isinstance(expected, DocumentError) and reason == str(expected)
        assert action == ("skipped" if isinstance(expected, DocumentSkipped) else "failed")
    assert found == ["parking.md"]


async def sync_and_search(source: Path, data_dir: Path, embedder: Any) -> tuple[Any, list[str]]:
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    config = KnowledgeConfig(sources=[FolderSource(path=source, name="docs")])
    knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine, embedder=embedder)
    try:
        await knowledge.open(index=False)
        report = await knowledge.syncer.run()
        hits = await knowledge.search.search("Where do visitors park?", k=3)
    finally:
        await knowledge.close()
        engine.dispose()
    return report, [h.doc_id for h in hits]
