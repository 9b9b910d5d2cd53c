"""The Slack app manifest agrees with the app: what an installer would notice if it were wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.slack import ids

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "slack" / "manifest.yaml"

# The bot scope each subscribed event needs (Slack refuses the manifest, or never delivers);
# None: no scope (app_context_changed needs the agent_view feature instead).
EVENT_SCOPES: dict[str, str | None] = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "reaction_added": "reactions:read",
    "reaction_removed": "reactions:read",
    "app_home_opened": None,
    "app_context_changed": None,
}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_is_a_version_1_manifest(manifest):
    assert manifest["_metadata"]["major_version"] == 1
    assert manifest["display_information"]["name"]
    assert manifest["features"]["bot_user"]["display_name"]


def test_slash_command_is_the_default_command(manifest):
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [ids.DEFAULT_COMMAND]
    assert commands[0]["should_escape"] is False


def test_correct_shortcut_is_a_message_shortcut(manifest):
    shortcuts = manifest["features"]["shortcuts"]
    (shortcut,) = [s for s in shortcuts if s["callback_id"] == ids.CORRECT_SHORTCUT]
    assert shortcut["type"] == "message"
    assert shortcut["name"] and shortcut["description"]


def test_dms_are_enabled(manifest):
    app_home = manifest["features"]["app_home"]
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is False


def test_every_request_url_is_the_events_path(manifest):
    settings = manifest["settings"]
    urls = [
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
        *(c["url"] for c in manifest["features"]["slash_commands"]),
    ]
    for url in urls:
        assert url.startswith("https://"), url
        assert url.endswith(ids.EVENTS_PATH), url
    assert settings["interactivity"]["is_enabled"] is True


def test_http_mode_by_default(manifest):
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is False
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False


def test_scopes_cover_every_subscribed_event(manifest):
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert set(events) == set(EVENT_SCOPES)
    missing = {
        event: EVENT_SCOPES[event]
        for event in events
        if EVENT_SCOPES[event] is not None and EVENT_SCOPES[event] not in scopes
    }
    assert not missing
    assert {"chat:write", "commands"} <= scopes


def test_subscribed_events_are_those_the_app_listens_to(manifest):
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert {event.split(".")[0] for event in events} == set(ids.EVENTS)


def test_the_agent_messaging_experience_is_declared_with_what_it_needs(manifest):
    features = manifest["features"]
    agent = features["agent_view"]
    assert agent["agent_description"] and len(agent["agent_description"]) <= 300
    assert len(agent.get("suggested_prompts") or []) <= 4
    assert "assistant_view" not in features  # the older experience, being deprecated
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert "assistant:write" in scopes  # thread status and suggested prompts
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_home_opened", "app_context_changed", "message.im"} <= events
    # The App Home tab the bot publishes, and the Messages tab the conversation lives in.
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is True


def test_scopes_are_listed_once(manifest):
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert len(scopes) == len(set(scopes))
