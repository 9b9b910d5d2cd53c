"""The Teams app manifest and its icons: what Teams' upload check would refuse if it were wrong.

Offline checks only (no schema download): the fields and limits of manifest schema 1.19 that
this app uses, and the icon files' sizes and colours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

TEAMS = Path(__file__).resolve().parent.parent / "deploy" / "teams"
MANIFEST = TEAMS / "manifest.json"
SCHEMA = "https://developer.microsoft.com/json-schemas/teams/v1.19/MicrosoftTeams.schema.json"
PLACEHOLDER = "${{BOT_ID}}"
COMMANDS = {"help", "status", "sync", "retrain", "rollback"}  # what bot.teams.app acts on


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def bot(manifest) -> dict[str, Any]:
    bots = manifest["bots"]
    assert len(bots) == 1  # Teams allows one bot per app
    return bots[0]


def test_is_valid_json_object():
    data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    for key in ("id", "version", "developer", "name", "description", "icons", "accentColor"):
        assert data.get(key), key


def test_schema_version_1_19(manifest):
    assert manifest["manifestVersion"] == "1.19"
    assert manifest["$schema"] == SCHEMA


def test_app_and_bot_ids_are_the_placeholder(manifest, bot):
    assert manifest["id"] == PLACEHOLDER
    assert bot["botId"] == PLACEHOLDER


def test_bot_scopes(bot):
    assert {"personal", "team", "groupChat"} <= set(bot["scopes"])
    assert bot["isNotificationOnly"] is False  # people talk to it
    assert bot["supportsFiles"] is False


def test_every_command_has_a_title_and_a_short_description(bot):
    lists = bot["commandLists"]
    assert lists
    for command_list in lists:
        assert command_list["scopes"]
        assert set(command_list["scopes"]) <= set(bot["scopes"])
        commands = command_list["commands"]
        assert len(commands) <= 10
        for command in commands:
            assert command["title"] and len(command["title"]) <= 32, command
            assert command["description"], command
            assert len(command["description"]) <= 128, command
        assert {c["title"] for c in commands} == COMMANDS
        assert len(commands) == len(COMMANDS)  # none listed twice


def test_command_lists_cover_every_scope(bot):
    covered = {scope for command_list in bot["commandLists"] for scope in command_list["scopes"]}
    assert covered == set(bot["scopes"])


def test_names_and_descriptions_fit(manifest):
    assert 0 < len(manifest["name"]["short"]) <= 30
    assert len(manifest["name"].get("full", "")) <= 100
    assert 0 < len(manifest["description"]["short"]) <= 80
    assert 0 < len(manifest["description"]["full"]) <= 4000
    assert len(manifest["developer"]["name"]) <= 32


def test_developer_urls_are_https(manifest):
    developer = manifest["developer"]
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        assert developer[key].startswith("https://"), key


def test_color_icon_is_192_and_opaque(manifest):
    path = TEAMS / manifest["icons"]["color"]
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (192, 192)
        rgba = image.convert("RGBA")
    alpha_min, _ = rgba.getchannel("A").getextrema()
    assert alpha_min == 255


def as_rgba(pixel: float | tuple[int, ...] | None) -> tuple[int, ...]:
    """An RGBA image's pixel, as Pillow returns it (typed for every image mode)."""
    assert isinstance(pixel, tuple) and len(pixel) == 4
    return pixel


def test_outline_icon_is_32_white_on_transparent(manifest):
    path = TEAMS / manifest["icons"]["outline"]
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (32, 32)
        assert image.mode == "RGBA"
        pixels = [as_rgba(image.getpixel((x, y))) for y in range(32) for x in range(32)]
    wrong = [p for p in pixels if p[3] != 0 and p[:3] != (255, 255, 255)]
    assert not wrong
    assert any(p[3] == 255 for p in pixels)  # something is drawn
    assert any(p[3] == 0 for p in pixels)  # on a transparent background
