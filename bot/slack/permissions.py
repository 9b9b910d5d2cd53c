"""Who may do what in Slack: experts' approvals and corrections count (as training data and
curated answers), admins run jobs. Either is named by user id or by user group; the
configuration is read at each check, so a changed list applies at once."""

from __future__ import annotations

from dataclasses import dataclass

from bot.slack.config import SlackConfig
from bot.slack.directory import Directory


@dataclass
class Permissions:
    config: SlackConfig
    directory: Directory

    async def is_expert(self, user: str) -> bool:
        """In `slack.experts`, or in one of `slack.expert_groups`."""
        config = self.config
        return user in config.experts or bool(
            config.expert_groups
            and set(config.expert_groups) & await self.directory.groups_of(user)
        )

    async def is_admin(self, user: str) -> bool:
        """In `slack.admins`, or in one of `slack.admin_groups`."""
        config = self.config
        return user in config.admins or bool(
            config.admin_groups and set(config.admin_groups) & await self.directory.groups_of(user)
        )
