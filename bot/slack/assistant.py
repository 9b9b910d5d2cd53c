"""Slack's agent messaging experience (`features.agent_view`): the thread status with loading
messages while an answer is written, the suggested prompts at the top of the conversation, and
what the user is looking at in Slack.

- `ThreadStatus`: `assistant.threads.setStatus` on the question's thread while it is answered,
  cleared (an empty status) when the answer is done or fails. Where Slack refuses it (a workspace
  without the agent experience, a channel where it is not allowed) the caller shows 👀 instead;
  a refusal is remembered for the channel for `slack.cache_ttl_s`.
- `prompts_for`: the suggested prompts, learned from questions asked in public channels whose
  answers used public documents only and were rated 👍 or approved (`slack.learned_prompts`),
  else `slack.suggested_prompts`.
- `Viewing`: the channel each user last looked at (`app_context_changed`, and the context on
  `message.im` and `app_home_opened`), kept in memory for `VIEWING_TTL_S`. It may rank what an
  answer uses; the documents a DM may use stay those of the DM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.client import error_code
from training.feedback.store import FeedbackStore

log = structlog.get_logger("expertbot.slack")

MAX_PROMPTS = 4  # Slack shows at most four suggested prompts
PROMPT_TITLE_LIMIT = 75
PROMPT_MESSAGE_LIMIT = 1000
VIEWING_TTL_S = 1800.0  # a context older than this says nothing about what the user looks at
CHANNEL_ENTITY = "slack#/types/channel_id"
_REFUSED = (SlackApiError, SlackRequestError)


def loading_messages(sources: Sequence[str]) -> list[str]:
    """What the status cycles through while an answer is written; the first names the source
    searched where there is exactly one."""
    searching = f"Searching the {sources[0]}…" if len(sources) == 1 else "Searching the documents…"
    return [searching, "Reading the sources…", "Writing…"]


@dataclass
class ThreadStatus:
    """The "is writing…" status under a question's thread, with its loading messages."""

    client: AsyncWebClient
    ttl_s: float
    sources: Sequence[str] = ()
    _refused: dict[str, float] = field(default_factory=dict)  # channel -> when Slack refused

    async def show(self, channel: str, thread: str) -> bool:
        """Set the status; False where Slack refused it (the caller shows 👀 instead)."""
        refused_at = self._refused.get(channel)
        if refused_at is not None and time.monotonic() - refused_at < self.ttl_s:
            return False
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=channel,
                thread_ts=thread,
                status="is looking this up…",
                loading_messages=loading_messages(self.sources),
            )
        except _REFUSED as exc:
            log.info("slack.status_refused", channel=channel, error=error_code(exc))
            self._refused[channel] = time.monotonic()
            return False
        self._refused.pop(channel, None)
        return True

    async def clear(self, channel: str, thread: str) -> None:
        """Clear the status (an empty one). Slack clears it itself when the bot replies; this
        covers answers that end without a reply and questions resumed elsewhere."""
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread, status=""
            )
        except _REFUSED as exc:  # a courtesy: never fail the answer for it
            log.info("slack.status_clear_failed", channel=channel, error=error_code(exc))


# -- suggested prompts ---------------------------------------------------------------------


def _prompt(question: str) -> dict[str, str]:
    text = " ".join(question.split())
    title = text if len(text) <= PROMPT_TITLE_LIMIT else text[: PROMPT_TITLE_LIMIT - 1] + "…"
    return {"title": title, "message": text[:PROMPT_MESSAGE_LIMIT]}


def _distinct(questions: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for question in questions:
        key = " ".join(question.lower().split()).rstrip("?!. ")
        if key and key not in seen:
            seen.add(key)
            kept.append(question)
    return kept


async def prompts_for(
    store: FeedbackStore, *, learned: bool, defaults: Sequence[str]
) -> list[dict[str, str]]:
    """Up to four prompts: the newest well-rated public questions when `learned`, topped up
    with `defaults`; de-duplicated."""
    found: list[str] = []
    if learned:
        found = await asyncio.to_thread(store.public_well_rated_questions, limit=4 * MAX_PROMPTS)
    return [_prompt(q) for q in _distinct([*found, *defaults])[:MAX_PROMPTS]]


# -- what the user is looking at -----------------------------------------------------------


def viewed_channel(event: Mapping[str, Any]) -> str | None:
    """The channel a user is looking at, from an event's context: `app_context_changed`'s
    `context`, the `app_context` Slack adds to `message.im` and `app_home_opened`. Its entities
    are ordered by relevance; the first channel counts. Only channels (C…, G…): a DM says
    nothing about a topic."""
    for key in ("context", "app_context"):
        context = event.get(key)
        if not isinstance(context, Mapping):
            continue
        entities = context.get("entities")
        for entity in entities if isinstance(entities, list) else []:
            if not isinstance(entity, Mapping) or entity.get("type") != CHANNEL_ENTITY:
                continue
            value = str(entity.get("value") or "")
            if value[:1] in ("C", "G"):
                return value
        channel = context.get("channel_id")  # the older assistant_view shape
        if isinstance(channel, str) and channel[:1] in ("C", "G"):
            return channel
    return None


def event_user(body: Mapping[str, Any], event: Mapping[str, Any]) -> str | None:
    """Whose context an event describes: the event's user, else the (non-bot) authorization."""
    user = event.get("user") or event.get("user_id")
    if isinstance(user, str) and user:
        return user
    for grant in body.get("authorizations") or []:
        if isinstance(grant, Mapping) and not grant.get("is_bot") and grant.get("user_id"):
            return str(grant["user_id"])
    return None


@dataclass
class Viewing:
    """The channel each user last looked at (per replica, in memory)."""

    ttl_s: float = VIEWING_TTL_S
    _seen: dict[str, tuple[float, str | None]] = field(default_factory=dict)

    def saw(self, user: str, channel: str | None) -> None:
        """`channel`: None when the user looks at nothing in particular any more."""
        self._seen[user] = (time.monotonic(), channel)
        if len(self._seen) > 10_000:  # forget the oldest half
            for old in sorted(self._seen, key=lambda u: self._seen[u][0])[:5_000]:
                del self._seen[old]

    def channel_of(self, user: str) -> str | None:
        seen = self._seen.get(user)
        if seen is None or time.monotonic() - seen[0] > self.ttl_s:
            return None
        return seen[1]
