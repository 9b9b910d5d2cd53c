"""The one `Settings` object, assembled at the entry point only.

Precedence, highest first: command-line options, environment (`EXPERTBOT_…`, nested with
`__`, e.g. `EXPERTBOT_KNOWLEDGE__STORE=weaviate`), the platforms' conventional variables
(`WEAVIATE_URL`, `WEAVIATE_API_KEY`, `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`,
`SLACK_APP_TOKEN`), the TOML file (`--config`, `EXPERTBOT_CONFIG`, or
`./expertbot.toml` when present), then defaults. Unknown keys and bad values are errors that
name the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from base.database import sqlite_url
from base.errors import ConfigError
from bot.core.config import AnswerConfig
from bot.schedule import ScheduleConfig, cron_trigger
from bot.slack.config import SlackConfig
from bot.teams.config import TeamsConfig
from knowledge.config import KnowledgeConfig
from training.config import DatasetConfig, ModelConfig, PromptConfig, TrainingConfig

ENV_PREFIX = "EXPERTBOT_"
# Variables with our prefix that are not settings keys.
_NOT_SETTINGS = {"EXPERTBOT_CONFIG"}
# Conventional variables of other tools, mapped onto our keys.
_CONVENTIONAL = {
    "WEAVIATE_URL": ("knowledge", "weaviate", "url"),
    "WEAVIATE_API_KEY": ("knowledge", "weaviate", "api_key"),
    "SLACK_BOT_TOKEN": ("slack", "bot_token"),
    "SLACK_SIGNING_SECRET": ("slack", "signing_secret"),
    "SLACK_APP_TOKEN": ("slack", "app_token"),
}


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="`expertbot serve --host`.")
    port: int = Field(default=3000, ge=0, le=65535, description="`expertbot serve --port`.")
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Larger requests are refused with 413."
    )
    drain_s: float = Field(
        default=25.0,
        ge=0,
        description="On SIGTERM, how long answers in flight may take to finish; what is left is "
        "released for another replica (below Kubernetes' 30 s grace period).",
    )


class DeliveryConfig(BaseModel):
    """Questions kept until answered (bot/intake.py)."""

    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(
        default=30.0, gt=0, description="A replica answering a question holds it this long."
    )
    renew_s: float = Field(default=10.0, gt=0, description="Leases are renewed this often.")
    scan_s: float = Field(
        default=10.0, gt=0, description="How often each replica looks for expired leases."
    )
    max_age_s: float = Field(
        default=300.0,
        gt=0,
        description="A question resumed later than this gets a short apology, not a stale answer.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Answering tries before the asker gets an apology."
    )

    @model_validator(mode="after")
    def _renewed_in_time(self) -> DeliveryConfig:
        if self.renew_s >= self.lease_s:
            raise ValueError("delivery.renew_s must be shorter than delivery.lease_s")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path(".expertbot"), description="Where every embedded store lives."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the SQL store; default SQLite in the data dir."
    )
    log_level: Literal["debug", "info", "warning", "error"] | None = Field(
        default=None, description="Default: warning for one-shot commands, info for the server."
    )
    log_format: Literal["auto", "console", "json"] = "auto"
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    answer: AnswerConfig = Field(default_factory=AnswerConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @model_validator(mode="after")
    def _source_schedules(self) -> Settings:
        for source in self.knowledge.sources:
            if source.schedule:
                try:
                    cron_trigger(source.schedule, self.schedule.timezone)
                except ValueError as exc:
                    raise ValueError(f"source {source.source_name!r}: schedule: {exc}") from None
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir / "expertbot.db")

    @property
    def adapter_registry(self) -> Path:
        return self.model.registry or self.data_dir / "adapters"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        layers = _LAYERS.get(settings_cls, {})
        environ = layers.get("environ")
        if environ is not None:
            env_settings = _MappingEnvSource(settings_cls, environ)
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=layers.get("conventional", {})),
            InitSettingsSource(settings_cls, init_kwargs=layers.get("file", {})),
        )


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k.lower(): v for k, v in environ.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._environ


_LAYERS: dict[type[BaseSettings], dict[str, Any]] = {}


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the Settings from file, environment and overrides; ConfigError names a bad key."""
    environ = os.environ if environ is None else environ
    path = config_file or (
        Path(environ["EXPERTBOT_CONFIG"]) if environ.get("EXPERTBOT_CONFIG") else None
    )
    if path is None and Path("expertbot.toml").is_file():
        path = Path("expertbot.toml")
    file_data = _read_toml(path) if path else {}
    _check_env_keys(environ)
    conventional: dict[str, Any] = {}
    for var, keys in _CONVENTIONAL.items():
        if environ.get(var):
            node = conventional
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = environ[var]

    # pydantic-settings asks the class, not the call, for its sources: a throwaway subclass
    # per call carries this call's file, environment and conventional layers.
    class _Resolved(Settings):
        pass

    _LAYERS[_Resolved] = {"file": file_data, "conventional": conventional, "environ": environ}
    try:
        resolved = _Resolved(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    finally:
        _LAYERS.pop(_Resolved, None)
    # Sources' credentials are given by reference; the environment is read here, once.
    for source in resolved.knowledge.sources:
        for reference in source.secret_references():
            reference.bind_environment(environ)
    return resolved


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _check_env_keys(environ: Mapping[str, str]) -> None:
    for var in environ:
        if not var.startswith(ENV_PREFIX) or var in _NOT_SETTINGS:
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        for part in parts:
            fields: dict[str, FieldInfo] = model.model_fields if model else {}
            if part not in fields:
                raise ConfigError(f"unknown setting {var} (no key {'.'.join(parts)})")
            annotation = fields[part].annotation
            model = (
                annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel)
                else None
            )


def _describe(exc: ValidationError, path: Path | None) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(settings)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        shown = "" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"
        if "api_key" in key or "secret" in key or "token" in key:
            shown = ""
        if isinstance(err.get("input"), dict | list):  # a whole section may hold a secret
            shown = ""
        lines.append(f"{key}: {msg}{shown}")
    where = f" in {path} or the environment" if path else ""
    return f"invalid settings{where}: " + "; ".join(lines)
