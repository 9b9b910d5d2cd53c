"""The app's Home tab: one Block Kit view per person, published with `views.publish`.

- Everyone: how to ask, what the bot knows (its sources, the index and the last sync) and their
  own recent questions.
- Experts: the latest answers rated 👎 or abstained on, with Approve / Correct buttons, listing
  only answers the expert may see under the rules of answering: the documents each answer was
  written from must be visible to the expert in a DM of theirs, and an answer given in a private
  channel needs the expert to be in it.
- Admins: the serving adapter and its scores, the last training runs, the next scheduled jobs,
  the feedback counts, and Sync / Retrain / Rollback (Rollback asks first).

Published when someone opens the tab, and after a job for admins and for those who opened it
within `slack.home_refresh_s` only (views.publish is rate-limited per workspace). A view holds
at most 100 blocks and every text within Slack's limits: lists are cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from base.errors import AdapterError
from bot.core.access import scope_for
from bot.core.question import Question, Where, WhereKind
from bot.core.runtime import Core
from bot.ops import ADMIN_JOBS, SCORE_LABELS, Ops
from bot.slack import ids
from bot.slack.client import error_code
from bot.slack.config import SlackConfig
from bot.slack.directory import Directory
from bot.slack.permissions import Permissions
from bot.slack.render import escape
from knowledge.sources import SourceStatus, source_statuses
from training.feedback.records import AnswerRecord

log = structlog.get_logger("expertbot.slack")

MAX_BLOCKS = 100  # Slack's limit on a Home tab view
TEXT_LIMIT = 3000  # a section's text
MY_QUESTIONS = 5
TO_REVIEW = 10  # shown: three blocks each
REVIEW_SCAN = 100  # answers looked at to find those an expert may see
RUNS = 3
_REFUSED = (SlackApiError, SlackRequestError)
JOB_LABELS = {"sync": "Sync documents", "retrain": "Retrain", "rollback": "Roll back"}


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut_lines(text)}}


def _cut_lines(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut_lines(text)}]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _button(
    text: str, action_id: str, value: str, *, style: str | None = None, confirm: Any = None
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


ROLLBACK_CONFIRM = {
    "title": {"type": "plain_text", "text": "Roll back the adapter?"},
    "text": {
        "type": "mrkdwn",
        "text": "Answers go back to the adapter that served before the current one.",
    },
    "confirm": {"type": "plain_text", "text": "Roll back"},
    "deny": {"type": "plain_text", "text": "Cancel"},
    "style": "danger",
}


@dataclass(frozen=True, slots=True)
class HomeData:
    """Everything one person's Home tab shows; `review` and `admin` only for those roles."""

    how_to_ask: str
    sources: Sequence[str]
    knows: str  # "18 documents, 120 chunks; last sync …"
    mine: Sequence[AnswerRecord]
    review: Sequence[tuple[AnswerRecord, int]] | None = None
    admin: dict[str, Any] | None = None
    runs: Sequence[dict[str, Any]] = ()


def home_view(data: HomeData) -> dict[str, Any]:
    """The Home tab view for `data` (at most `MAX_BLOCKS` blocks)."""
    blocks: list[dict[str, Any]] = [
        _header("Ask me"),
        _section(data.how_to_ask),
        _header("What I know"),
        _section("".join(f"• {escape(s)}\n" for s in data.sources) + data.knows),
        _header("Your recent questions"),
    ]
    if data.mine:
        lines = [
            f"• {escape(_cut(row.question, 200))} — _{row.created_at:%Y-%m-%d %H:%M} UTC_"
            + (" (I didn't know)" if row.abstained else "")
            for row in data.mine
        ]
        blocks.append(_section("\n".join(lines)))
    else:
        blocks.append(_context("None yet: mention me in a channel or send me a message."))
    if data.review is not None:
        blocks += _review_blocks(data.review)
    if data.admin is not None:
        blocks += _admin_blocks(data.admin, data.runs)
    if len(blocks) > MAX_BLOCKS:
        blocks = [*blocks[: MAX_BLOCKS - 1], _context("… more than fits here.")]
    return {"type": "home", "blocks": blocks}


def _review_blocks(review: Sequence[tuple[AnswerRecord, int]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "divider"}, _header("Answers to review")]
    if not review:
        return [*blocks, _context("Nothing to review: no answer rated 👎 or abstained on.")]
    for row, downs in review[:TO_REVIEW]:
        why = "I didn't know" if row.abstained else f"{downs} × 👎"
        where = {"public": "a public channel", "private": "a private channel", "dm": "a DM"}
        blocks += [
            _section(f"*{escape(_cut(row.question, 300))}*\n{escape(_cut(row.answer, 600))}"),
            _context(
                f"{why} · asked in {where.get(row.where_kind, row.where_kind)} · "
                f"{row.created_at:%Y-%m-%d %H:%M} UTC"
            ),
            {
                "type": "actions",
                "block_id": f"review_{row.id}",
                "elements": [
                    _button("Approve", ids.HOME_APPROVE, row.id, style="primary"),
                    _button("Correct", ids.HOME_CORRECT, row.id),
                ],
            },
        ]
    if len(review) > TO_REVIEW:
        blocks.append(_context(f"… and {len(review) - TO_REVIEW} more."))
    return blocks


def _scores(metrics: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    shown = []
    for key, label in SCORE_LABELS:
        value = metrics.get(key)
        if not isinstance(value, int | float):
            continue
        before = (baseline or {}).get(key)
        shown.append(
            f"{label} {before:.2f} → {value:.2f}"
            if isinstance(before, int | float)
            else f"{label} {value:.2f}"
        )
    return ", ".join(shown) or "no scores"


def _admin_blocks(status: dict[str, Any], runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    adapter = status.get("adapter")
    serving = (
        f"*Serving:* {status['model']} + adapter `{adapter['version']}` — "
        f"{_scores(adapter.get('metrics') or {}, adapter.get('baseline'))}"
        if adapter
        else f"*Serving:* {status['model']} (no adapter)"
    )
    run_lines = []
    for run in runs:
        verdict = str(run.get("status"))
        detail = run.get("reason") or run.get("error") or "; ".join(run.get("reasons") or [])
        version = f" `{run['version']}`" if run.get("version") else ""
        scores = f" — {_scores(run['metrics'])}" if run.get("metrics") else ""
        when = run.get("finished_at") or run.get("started_at")
        line = f"• {when}: *{verdict}*{version}{scores}"
        run_lines.append(line + (f" ({escape(_cut(str(detail), 200))})" if detail else ""))
    schedule = status.get("schedule") or {}
    planned = [
        f"• {job}: next {entry.get('next')} {schedule.get('timezone', '')} (`{entry['cron']}`)"
        for job, entry in (schedule.get("jobs") or {}).items()
    ]
    fb = status.get("feedback") or {}
    counts = (
        f"{fb.get('answers', 0)} answers, {fb.get('up', 0)} 👍, {fb.get('down', 0)} 👎, "
        f"{fb.get('approved', 0)} approved, {fb.get('corrections', 0)} corrections, "
        f"{fb.get('comments', 0)} comments"
    )
    buttons = [
        _button(
            JOB_LABELS[job],
            f"{ids.HOME_JOB}_{job}",
            job,
            style="danger" if job == "rollback" else None,
            confirm=ROLLBACK_CONFIRM if job == "rollback" else None,
        )
        for job in ADMIN_JOBS
    ]
    return [
        {"type": "divider"},
        _header("Admin"),
        _section(serving),
        _section("*Last training runs*\n" + ("\n".join(run_lines) or "None yet.")),
        _section(
            "*Scheduled*\n" + ("\n".join(planned) or "Nothing: jobs run when you start them.")
        ),
        _section(f"*Feedback:* {counts}"),
        {"type": "actions", "block_id": "admin_jobs", "elements": buttons},
    ]


@dataclass
class Home:
    """Builds and publishes people's Home tabs; remembers who opened theirs lately."""

    client: AsyncWebClient
    config: SlackConfig
    core: Core
    ops: Ops
    permissions: Permissions
    directory: Directory
    how_to_ask: str
    _viewers: dict[str, float] = field(default_factory=dict)  # user -> when they last opened it

    async def opened(self, user: str) -> None:
        self._viewers[user] = time.monotonic()
        await self.publish(user)

    async def refresh(self) -> None:
        """After a job: republish for the admins and whoever opened the tab lately."""
        now = time.monotonic()
        recent = {u for u, at in self._viewers.items() if now - at <= self.config.home_refresh_s}
        for user in sorted(set(self.config.admins) | recent):
            await self.publish(user)

    async def publish(self, user: str) -> None:
        try:
            view = home_view(await self.data(user))
            await self.client.views_publish(user_id=user, view=view)
        except _REFUSED as exc:
            log.warning("slack.home_publish_failed", user=user, error=error_code(exc))

    async def data(self, user: str) -> HomeData:
        store = self.core.store
        stats, last = await self.ops.knowledge.status()
        knows = f"{stats.documents} documents, {stats.chunks} passages; last sync: " + (
            f"{last.finished_at or last.started_at:%Y-%m-%d %H:%M} UTC ({last.status})"
            if last
            else "never"
        )
        sources = [
            _source_line(status)
            for status in await asyncio.to_thread(
                source_statuses, self.ops.settings.knowledge, self.ops.knowledge.engine
            )
        ]
        mine = await asyncio.to_thread(
            store.recent_questions, user, platform="slack", limit=MY_QUESTIONS
        )
        review = await self.reviewable(user) if await self.permissions.is_expert(user) else None
        admin, runs = None, []
        if await self.permissions.is_admin(user):
            admin = await self.ops.status()
            runs = await asyncio.to_thread(self._runs)
        return HomeData(self.how_to_ask, sources, knows, mine, review, admin, runs)

    def _runs(self) -> list[dict[str, Any]]:
        runs = list(reversed(self.ops.registry.runs()[-RUNS:]))
        for run in runs:
            if run.get("version"):
                with contextlib.suppress(AdapterError):
                    run["metrics"] = self.ops.registry.get(str(run["version"])).meta.get("metrics")
        return runs

    async def reviewable(self, user: str) -> list[tuple[AnswerRecord, int]]:
        """The answers to review that `user` may see, newest first."""
        rows = await asyncio.to_thread(self.core.store.answers_to_review, limit=REVIEW_SCAN)
        return [(row, downs) for row, downs in rows if await self.may_see(user, row)]

    async def may_see(self, user: str, row: AnswerRecord) -> bool:
        """Whether `user` may see an answer: the rules of answering, applied to them. Every
        document it was written from must be one their own DM could use, plus, for an answer
        in a private channel, the documents of that channel if they are in it (else nothing)."""
        channel: str | None = None
        if row.where_kind == WhereKind.PRIVATE:
            if not row.channel or row.channel not in await self.directory.private_channels_of(user):
                return False
            channel = row.channel
        asker = Question(
            text="",
            asker=user,
            where=Where(kind=WhereKind.DM, channel=channel, platform="slack"),
            asker_groups=await self.directory.groups_of(user),
        )
        scope = scope_for(asker, self.core.answerer.config)
        return all(scope.sees(c.access, c.allowed) for c in row.retrieved) and all(
            scope.sees(s.source.access, s.source.allowed) for s in row.sources
        )


def _source_line(status: SourceStatus) -> str:
    """A source as the Home tab lists it: "handbook (folder): 18 documents, synced …"."""
    if status.last_sync is None:
        return f"{status.name} ({status.type}): not synced yet"
    when = f"{status.last_sync:%Y-%m-%d %H:%M} UTC"
    if status.status == "failed":
        return f"{status.name} ({status.type}): could not be read at {when}; earlier documents kept"
    return f"{status.name} ({status.type}): {status.documents} documents, synced {when}"
