"""Slack's Web API client as the app uses it: retried where Slack is busy or unreachable, and the
few calls whose failure is logged rather than raised (a reply that cannot be posted must not
break the listener that wanted to post it)."""

from __future__ import annotations

from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.config import SlackConfig

log = structlog.get_logger("expertbot.slack")


def make_client(config: SlackConfig) -> AsyncWebClient:
    """The bot's client: its token, `slack.api_url`, and `slack.rate_limit_retries` retries on
    connection errors, rate limits (after Retry-After) and server errors."""
    assert config.bot_token is not None
    retries = config.rate_limit_retries
    return AsyncWebClient(
        token=config.bot_token.get_secret_value(),
        base_url=config.api_url or AsyncWebClient.BASE_URL,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=retries),
            AsyncRateLimitErrorRetryHandler(max_retry_count=retries),
            AsyncServerErrorRetryHandler(max_retry_count=retries),
        ],
    )


async def post(
    client: AsyncWebClient, channel: str, thread: str | None, text: str, **kwargs: Any
) -> str | None:
    """`chat.postMessage` into `thread`; the new message's ts, or None (logged) if refused."""
    try:
        response = await client.chat_postMessage(
            channel=channel, thread_ts=thread, text=text, **kwargs
        )
        return str(response["ts"])
    except SlackApiError as exc:
        log.error("slack.post_failed", channel=channel, error=error_code(exc))
        return None


def error_code(exc: SlackApiError | SlackRequestError) -> str:
    """What Slack said (`not_allowed_token_type`, an HTTP status), never the request."""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.get("error") or response.status_code)
        except Exception:
            pass
    return exc.__class__.__name__
