"""One Settings object from file, environment and conventional variables; bad keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import ConfigError
from bot.settings import load_settings
from tests.helpers import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "expertbot.toml"
    path.write_text(text)
    return path


def test_defaults_put_every_store_in_the_data_dir(tmp_path):
    settings = load_settings(environ={})
    assert settings.data_dir == Path(".expertbot")
    assert settings.resolved_database_url == "sqlite:///.expertbot/expertbot.db"
    assert settings.knowledge.store == "lancedb" and settings.knowledge.sources == []


def test_file_then_environment_then_overrides(tmp_path):
    path = write(
        tmp_path,
        """
data_dir = "/srv/bot"
[knowledge]
store = "lancedb"
[[knowledge.sources]]
path = "docs"
access = "private"
[knowledge.search]
k = 7
alpha = 0.3
""",
    )
    env = {
        "EXPERTBOT_KNOWLEDGE__SEARCH__K": "9",
        "EXPERTBOT_DATABASE_URL": "postgresql+psycopg://bot@db/expertbot",
    }
    settings = load_settings(config_file=path, environ=env, overrides={"data_dir": Path("/tmp/x")})
    assert settings.data_dir == Path("/tmp/x")  # the command line wins
    assert settings.knowledge.search.k == 9  # environment beats the file
    assert settings.knowledge.search.alpha == 0.3  # the file fills in what the environment lacks
    assert settings.knowledge.sources[0].access == "private"
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")


def test_config_file_from_environment_variable(tmp_path):
    path = write(tmp_path, "[knowledge.chunking]\nmax_tokens = 120\n")
    settings = load_settings(environ={"EXPERTBOT_CONFIG": str(path)})
    assert settings.knowledge.chunking.max_tokens == 120


def test_weaviate_from_its_conventional_variables(monkeypatch):
    monkeypatch.setenv("EXPERTBOT_KNOWLEDGE__STORE", "weaviate")
    monkeypatch.setenv("WEAVIATE_URL", "http://weaviate:8080")
    monkeypatch.setenv("WEAVIATE_API_KEY", "s3cr3t-key")
    import os

    settings = load_settings(environ=os.environ)
    assert settings.knowledge.store == "weaviate"
    assert settings.knowledge.weaviate.url == "http://weaviate:8080"
    api_key = settings.knowledge.weaviate.api_key
    assert api_key is not None and api_key.get_secret_value() == "s3cr3t-key"
    assert "s3cr3t-key" not in repr(settings)


def test_unknown_environment_key_is_named():
    with pytest.raises(ConfigError, match="EXPERTBOT_KNOWLEDGE__SERACH__K"):
        load_settings(environ={"EXPERTBOT_KNOWLEDGE__SERACH__K": "3"})


def test_unknown_file_key_is_named(tmp_path):
    path = write(tmp_path, "[knowledge.search]\nkk = 3\n")
    with pytest.raises(ConfigError, match=r"knowledge\.search\.kk: unknown key"):
        load_settings(config_file=path, environ={})


def test_bad_value_is_named_with_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTBOT_KNOWLEDGE__SEARCH__ALPHA", "3")
    import os

    with pytest.raises(
        ConfigError, match=r"knowledge\.search\.alpha: .*less than or equal to 1.*'3'"
    ):
        load_settings(environ=os.environ)


def test_overlap_must_be_below_the_budget(tmp_path):
    path = write(tmp_path, "[knowledge.chunking]\nmax_tokens = 50\noverlap_tokens = 50\n")
    with pytest.raises(ConfigError, match="overlap_tokens must be smaller"):
        load_settings(config_file=path, environ={})


def test_broken_toml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=write(tmp_path, "[knowledge\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_secret_values_are_not_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("EXPERTBOT_KNOWLEDGE__WEAVIATE__API_KEY", "")
    monkeypatch.setenv("EXPERTBOT_KNOWLEDGE__WEAVIATE__TIMEOUT_S", "-1")
    import os

    with pytest.raises(ConfigError) as info:
        load_settings(environ=os.environ)
    assert "knowledge.weaviate.timeout_s" in str(info.value)


def test_the_documented_example_config_loads():
    settings = load_settings(config_file=ROOT / "examples" / "expertbot.toml", environ={})
    assert settings.knowledge.sources[0].name == "handbook"
    assert settings.knowledge.search.fusion == "rrf"


def test_the_example_config_documents_every_key():
    """examples/expertbot.toml is the reference: a new setting must appear there."""
    from pydantic import BaseModel

    from bot.settings import Settings

    text = (ROOT / "examples" / "expertbot.toml").read_text()

    def keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found += keys(kind, f"{prefix}{name}.")
            else:
                found.append((prefix, name))
        return found

    missing = [
        f"{prefix}{name}"
        for prefix, name in keys(Settings)
        if f"[[{prefix}{name}]]" not in text
        and not any(line.lstrip("# ").startswith(f"{name} =") for line in text.splitlines())
    ]
    assert missing == []


def test_model_and_answer_settings_come_from_the_environment():
    settings = load_settings(
        environ={
            "EXPERTBOT_MODEL__BASE": "demo",
            "EXPERTBOT_MODEL__BACKEND": "openai",
            "EXPERTBOT_MODEL__OPENAI__BASE_URL": "http://vllm:8000/v1",
            "EXPERTBOT_ANSWER__MIN_SIMILARITY": "0.5",
            "EXPERTBOT_ANSWER__PRIVATE_READERS": '["U1", "hr-team"]',
        }
    )
    assert settings.model.base == "demo" and settings.model.backend == "openai"
    assert settings.model.openai.base_url == "http://vllm:8000/v1"
    assert settings.answer.min_similarity == 0.5
    assert settings.answer.private_readers == ["U1", "hr-team"]
    with pytest.raises(ConfigError, match=r"model\.backend"):
        load_settings(environ={"EXPERTBOT_MODEL__BACKEND": "llamafile"})
