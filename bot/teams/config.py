"""Teams configuration (`[teams]` in the TOML file, `EXPERTBOT_TEAMS__…` in the environment).

The bot's Entra app registration: `EXPERTBOT_TEAMS__CLIENT_ID`, `__CLIENT_SECRET`,
`__TENANT_ID`. Every request to `/api/messages` must then carry a Bot Framework / Entra JWT for
that app. `EXPERTBOT_TEAMS__ANONYMOUS=true` accepts requests without a token — for the M365
Agents Playground on a laptop only; the server says so loudly at start-up. People are named by
their Entra (AAD) object ids: `EXPERTBOT_TEAMS__EXPERTS=<id>,<id>`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bot.core.config import IdList

MESSAGES_PATH = "/api/messages"  # Teams' conventional endpoint


class TeamsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str | None = Field(default=None, description="The Entra app (bot) id.")
    client_secret: SecretStr | None = Field(default=None, description="The Entra app's secret.")
    tenant_id: str | None = Field(default=None, description="The Entra tenant of the app.")
    anonymous: bool = Field(
        default=False,
        description="Accept requests without a token (local development only; never in "
        "production: anyone who can reach the server could then talk as anyone).",
    )
    admins: IdList = Field(
        default_factory=list, description="Entra object ids allowed status/sync/retrain/rollback."
    )
    experts: IdList = Field(
        default_factory=list, description="Entra object ids whose approvals and corrections count."
    )
    admin_conversation: str | None = Field(
        default=None,
        description="Conversation id where every training run's report is posted (mention the "
        "bot there once so it knows where that is).",
    )
    stream: bool = Field(
        default=True,
        description="Stream answers in 1:1 chats (Teams streams only there); off: typing, then "
        "one message, everywhere.",
    )
    followup_turns: int = Field(
        default=3, ge=0, le=20, description="Earlier turns given with a follow-up question."
    )
    followup_window_s: float = Field(
        default=1800.0,
        ge=0,
        description="In chats (not channel threads), only turns this recent are a follow-up's "
        "history.",
    )

    @model_validator(mode="after")
    def _complete(self) -> TeamsConfig:
        given = [self.client_id, self.client_secret, self.tenant_id]
        if any(given) and not all(given):
            raise ValueError(
                "teams needs client_id, client_secret and tenant_id together "
                "(EXPERTBOT_TEAMS__CLIENT_ID, __CLIENT_SECRET, __TENANT_ID)"
            )
        return self

    @property
    def configured(self) -> bool:
        return self.anonymous or self.client_id is not None
