"""What the app needs to know about Slack's conversations and people, looked up through the Web
API and cached for `slack.cache_ttl_s`: what kind of conversation a channel is (which decides
the documents an answer may use) and the user groups a person belongs to (their access, and
whether they are an expert or an admin)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.question import WhereKind
from bot.slack.client import error_code

log = structlog.get_logger("expertbot.slack")

# Message events say what kind of conversation they come from; mentions need a lookup.
KIND_OF_CHANNEL_TYPE = {
    "im": WhereKind.DM,
    "mpim": WhereKind.PRIVATE,
    "group": WhereKind.PRIVATE,
    "channel": WhereKind.PUBLIC,
}


@dataclass
class Directory:
    """Channel kinds and user-group members, looked up through the Web API and cached."""

    client: AsyncWebClient
    ttl: float
    _kinds: dict[str, tuple[float, WhereKind]] = field(default_factory=dict)
    _names: dict[str, str] = field(default_factory=dict)
    _private: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    _groups: tuple[float, dict[str, tuple[str, frozenset[str]]]] | None = None

    async def where_kind(self, channel: str, channel_type: str | None) -> WhereKind:
        """What kind of conversation `channel` is; `channel_type` is the event's, if it had one."""
        if channel_type in KIND_OF_CHANNEL_TYPE:
            return KIND_OF_CHANNEL_TYPE[channel_type]
        cached = self._kinds.get(channel)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            info = (await self.client.conversations_info(channel=channel))["channel"]
        except SlackApiError as exc:
            # Unknown means public: the most restrictive choice of documents.
            log.warning("slack.channel_info_failed", channel=channel, error=error_code(exc))
            return WhereKind.PUBLIC
        if info.get("name"):
            self._names[channel] = str(info["name"])
        if info.get("is_im"):
            kind = WhereKind.DM
        elif info.get("is_private") or info.get("is_mpim") or info.get("is_group"):
            kind = WhereKind.PRIVATE
        else:
            kind = WhereKind.PUBLIC
        self._kinds[channel] = (time.monotonic(), kind)
        return kind

    async def name_of(self, channel: str) -> str | None:
        """A channel's name (looked up with its kind), or None where Slack does not say."""
        if channel not in self._names:
            await self.where_kind(channel, None)
        return self._names.get(channel)

    async def private_channels_of(self, user: str) -> frozenset[str]:
        """The private channels and group DMs `user` is in (those the bot is in too: the only
        ones it can answer in), cached; empty if Slack will not say."""
        cached = self._private.get(user)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        found: set[str] = set()
        cursor: str | None = None
        try:
            while True:
                response = await self.client.users_conversations(
                    user=user,
                    types="private_channel,mpim",
                    exclude_archived=True,
                    limit=200,
                    cursor=cursor,
                )
                found.update(str(c["id"]) for c in response.get("channels") or [])
                cursor = (response.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        except SlackApiError as exc:
            log.warning("slack.user_channels_failed", error=error_code(exc))
            return frozenset()
        self._private[user] = (time.monotonic(), frozenset(found))
        return frozenset(found)

    async def groups_of(self, user: str) -> frozenset[str]:
        """The ids and handles of the user groups `user` belongs to."""
        groups = await self._all_groups()
        found: set[str] = set()
        for group_id, (handle, members) in groups.items():
            if user in members:
                found.update({group_id, handle} - {""})
        return frozenset(found)

    async def _all_groups(self) -> dict[str, tuple[str, frozenset[str]]]:
        if self._groups and time.monotonic() - self._groups[0] < self.ttl:
            return self._groups[1]
        try:
            response = await self.client.usergroups_list(include_users=True)
            groups = {
                str(g["id"]): (str(g.get("handle", "")), frozenset(g.get("users") or ()))
                for g in response.get("usergroups") or []
            }
        except SlackApiError as exc:
            log.warning("slack.usergroups_failed", error=error_code(exc))
            groups = self._groups[1] if self._groups else {}
        self._groups = (time.monotonic(), groups)
        return groups
