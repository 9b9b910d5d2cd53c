"""The Slack fake answers the real slack_sdk clients the way Slack does (Web API and Socket Mode)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.slack_fake import BOT_ID, BOT_USER, TEAM, FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack.api_url)


async def test_post_message_is_recorded_with_blocks_decoded(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    first = await client.chat_postMessage(channel="C1", text="hi", blocks=blocks, thread_ts="1.2")
    second = await client.chat_postMessage(channel="C1", text="again")

    assert first["ok"] and first["channel"] == "C1"
    assert first["message"]["user"] == BOT_USER and first["message"]["bot_id"] == BOT_ID
    assert float(second["ts"]) > float(first["ts"])
    [call, _] = slack.calls_to("chat.postMessage")
    assert call.body == {"channel": "C1", "text": "hi", "blocks": blocks, "thread_ts": "1.2"}
    assert call.headers["Authorization"] == "Bearer xoxb-test"
    assert (await client.auth_test())["user_id"] == BOT_USER


async def test_query_and_form_parameters_are_merged(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.set_channel("G1", is_private=True, name="secret")
    slack.set_usergroup("S1", "experts", ["U1", "U2"])

    await client.reactions_add(channel="C1", timestamp="1.2", name="eyes")
    info = await client.conversations_info(channel="G1")
    dm = await client.conversations_info(channel="D1")
    groups = await client.usergroups_list(include_users=True)
    members = await client.usergroups_users_list(usergroup="S1")
    await client.api_call("views.publish", data={"user_id": "U1", "view": '{"type": "home"}'})

    assert slack.calls_to("reactions.add")[0].body == {
        "channel": "C1",
        "timestamp": "1.2",
        "name": "eyes",
    }
    assert info["channel"]["is_private"] and info["channel"]["name"] == "secret"
    assert dm["channel"]["is_im"] and not dm["channel"]["is_channel"]
    assert groups["usergroups"] == [{"id": "S1", "handle": "experts", "users": ["U1", "U2"]}]
    assert members["users"] == ["U1", "U2"]
    assert slack.calls_to("views.publish")[0].body["view"] == {"type": "home"}


async def test_a_queued_rate_limit_is_retried(slack: FakeSlack) -> None:
    client = AsyncWebClient(
        token="xoxb-test",
        base_url=slack.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack.fail("chat.postMessage", status=429, retry_after=0)

    response = await client.chat_postMessage(channel="C1", text="hi")

    assert response["ok"]
    assert [c.failed for c in slack.calls_to("chat.postMessage")] == [True, False]


async def test_an_error_raises_slack_api_error(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail("chat.update", error="message_not_found")
    with pytest.raises(SlackApiError) as raised:
        await client.chat_update(channel="C1", ts="1.2", text="x")
    assert raised.value.response["error"] == "message_not_found"
    assert (await client.chat_update(channel="C1", ts="1.2", text="x"))["ok"]

    slack.fail("chat.postMessage", status=429)  # without a retry handler: raised at once
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C1", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "1"


async def test_chat_stream_starts_appends_and_stops(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    stream = await client.chat_stream(
        channel="C1",
        thread_ts="1.2",
        recipient_team_id=TEAM,
        recipient_user_id="U1",
        buffer_size=5,
    )
    await stream.append(markdown_text="Hello")  # fills the buffer: chat.startStream
    await stream.append(markdown_text=" world")  # chat.appendStream
    await stream.append(markdown_text="!")  # buffered
    await stream.stop()  # chat.stopStream with the rest

    methods = [c.method for c in slack.calls]
    assert methods == ["chat.startStream", "chat.appendStream", "chat.stopStream"]
    start, append, stop = slack.calls
    assert start.body["thread_ts"] == "1.2" and start.body["recipient_user_id"] == "U1"
    assert start.body["chunks"] == [{"type": "markdown_text", "text": "Hello"}]
    assert append.body["ts"] == stream.ts == stop.body["ts"]
    assert append.body["chunks"] == [{"type": "markdown_text", "text": " world"}]
    assert stop.body["chunks"] == [{"type": "markdown_text", "text": "!"}]


async def test_response_url_posts_are_recorded(slack: FakeSlack) -> None:
    webhook = AsyncWebhookClient(slack.response_url("abc"))
    response = await webhook.send(text="done", response_type="ephemeral")
    assert response.status_code == 200
    [call] = await slack.wait_for("response_url:abc")
    assert call.body == {"text": "done", "response_type": "ephemeral"}


async def test_wait_for_times_out_with_a_summary(slack: FakeSlack, client: AsyncWebClient) -> None:
    await client.auth_test()
    with pytest.raises(AssertionError, match=r"calls seen: \[auth.test\]"):
        await slack.wait_for("chat.postMessage", timeout=0.1)


async def test_socket_mode_client_connects_and_acks(slack: FakeSlack) -> None:
    received: list[SocketModeRequest] = []

    async def listener(socket: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        response = SocketModeResponse(request.envelope_id, payload={"text": "pong"})
        await socket.send_socket_mode_response(response)

    socket = SocketModeClient(
        app_token="xapp-test", web_client=AsyncWebClient(base_url=slack.api_url)
    )
    socket.socket_mode_request_listeners.append(listener)
    await socket.connect()
    try:
        payload = {"command": "/ask", "text": "ping"}
        ack = await asyncio.wait_for(
            slack.send_envelope("slash_commands", payload, accepts_response_payload=True), 10
        )
    finally:
        await socket.close()

    [opened] = slack.calls_to("apps.connections.open")
    assert opened.headers["Authorization"] == "Bearer xapp-test"
    assert received[0].type == "slash_commands" and received[0].payload == payload
    assert received[0].accepts_response_payload
    assert ack == {"envelope_id": received[0].envelope_id, "payload": {"text": "pong"}}


async def test_the_agent_calls_and_views_publish_refuse_what_slack_refuses() -> None:
    async with FakeSlack() as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        await client.assistant_threads_setStatus(
            channel_id="D1", thread_ts="1.2", status="is writing…", loading_messages=["Writing…"]
        )
        prompts = [{"title": f"Q{n}", "message": f"Question {n}?"} for n in range(5)]
        await client.assistant_threads_setSuggestedPrompts(channel_id="D1", prompts=prompts[:4])
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            await client.assistant_threads_setSuggestedPrompts(channel_id="D1", prompts=prompts)
        divider = {"type": "divider"}
        published = await client.views_publish(
            user_id="U1", view={"type": "home", "blocks": [divider] * 100}
        )
        assert published["view"]["id"].startswith("V")
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            await client.views_publish(
                user_id="U1", view={"type": "home", "blocks": [divider] * 101}
            )
        status, *_ = slack.calls_to("assistant.threads.setStatus")
        assert status.body == {
            "channel_id": "D1",
            "thread_ts": "1.2",
            "status": "is writing…",
            "loading_messages": ["Writing…"],
        }
        assert "thread_ts" not in slack.calls_to("assistant.threads.setSuggestedPrompts")[0].body
