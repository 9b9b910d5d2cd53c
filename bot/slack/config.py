"""Slack configuration (`[slack]` in the TOML file, `EXPERTBOT_SLACK__…` in the environment).

The tokens also come from Slack's conventional variables: `SLACK_BOT_TOKEN`,
`SLACK_SIGNING_SECRET`, `SLACK_APP_TOKEN`. Id lists take comma-separated values in the
environment (`EXPERTBOT_SLACK__EXPERTS=U01ABC,U02DEF`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bot.core.config import IdList
from bot.slack.ids import DEFAULT_COMMAND


class SlackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr | None = Field(default=None, description="xoxb-… ($SLACK_BOT_TOKEN).")
    signing_secret: SecretStr | None = Field(
        default=None, description="Verifies every HTTP request ($SLACK_SIGNING_SECRET)."
    )
    app_token: SecretStr | None = Field(
        default=None, description="xapp-…; when set, Socket Mode is used ($SLACK_APP_TOKEN)."
    )
    api_url: str | None = Field(
        default=None, description="Slack Web API base URL (proxies, tests); default Slack's."
    )
    admins: IdList = Field(default_factory=list, description="User ids allowed admin commands.")
    experts: IdList = Field(
        default_factory=list, description="User ids whose approvals and corrections count."
    )
    admin_groups: IdList = Field(default_factory=list, description="User group ids (S…).")
    expert_groups: IdList = Field(default_factory=list, description="User group ids (S…).")
    channels: IdList = Field(
        default_factory=list, description="Channels the bot answers in; empty: every one."
    )
    admin_channel: str | None = Field(
        default=None,
        description="Channel id where every training run's report is posted (invite the bot).",
    )
    approval_reaction: str = Field(
        default="white_check_mark", description="The reaction by which an expert approves."
    )
    correction_prefix: str = Field(
        default="correction:", description="A thread reply starting with this is a correction."
    )
    command: str = Field(default=DEFAULT_COMMAND, pattern=r"^/[a-z0-9_-]+$")
    stream: bool = Field(
        default=True,
        description="Stream with chat.startStream/appendStream/stopStream; off: post, then update.",
    )
    update_interval_s: float = Field(
        default=1.0,
        ge=0.1,
        description="Minimum time between chat.update calls when not streaming.",
    )
    suggested_prompts: list[str] = Field(
        default_factory=list,
        description="Questions suggested at the top of the app's Messages tab (up to four shown), "
        "after or instead of learned ones.",
    )
    learned_prompts: bool = Field(
        default=True,
        description="Suggest questions asked in public channels whose answers used public "
        "documents only and were rated 👍 or approved; off: `suggested_prompts` only.",
    )
    suggested_prompts_title: str = Field(
        default="Try asking", max_length=75, description="The title above the suggested prompts."
    )
    home_refresh_s: float = Field(
        default=900.0,
        ge=0,
        description="After a job, the App Home is refreshed for admins and for whoever opened it "
        "within this many seconds.",
    )
    rate_limit_retries: int = Field(default=3, ge=0, le=10)
    cache_ttl_s: float = Field(
        default=300.0, ge=0, description="How long channel kinds and group members are cached."
    )

    @property
    def configured(self) -> bool:
        return self.bot_token is not None and (
            self.signing_secret is not None or self.app_token is not None
        )

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None
