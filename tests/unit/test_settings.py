"""Settings resolution: CLI flags > env vars > config file > defaults, and no keys in files."""

import json
import os
from pathlib import Path

import pytest

from causal_grpo.context import Context
from causal_grpo.settings import ConfigError, read_config_file, resolve_context


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CAUSAL_GRPO_") or name in {"OPENAI_MODEL", "OPENAI_BASE_URL"}:
            monkeypatch.delenv(name)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_nothing_is_given() -> None:
    assert resolve_context({}) == Context()


def test_flags_beat_env_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, "c.json", json.dumps({"model": "from-file", "concurrency": 2, "seed": 7, "rollouts": 5}))
    monkeypatch.setenv("CAUSAL_GRPO_MODEL", "from-env")
    monkeypatch.setenv("CAUSAL_GRPO_CONCURRENCY", "4")
    context = resolve_context({"model": "from-flag", "concurrency": None, "seed": None}, config)
    assert context.model == "from-flag"  # flag over env and file
    assert context.concurrency == 4  # env over file; a None flag is "not given"
    assert context.seed == 7  # file over default
    assert context.rollouts == 5
    assert context.max_reasks == Context().max_reasks  # default


def test_openai_env_vars_are_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "gpt-fallback")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:9/v1")
    context = resolve_context({})
    assert (context.model, context.base_url) == ("gpt-fallback", "http://localhost:9/v1")
    monkeypatch.setenv("CAUSAL_GRPO_MODEL", "ours")
    assert resolve_context({}).model == "ours"


def test_toml_config_from_env_with_per_agent_endpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path,
        "api_config.toml",
        'model = "gpt-small"\n'
        '[agents.critic]\nmodel = "gpt-big"\nbase_url = "http://h/v1"\napi_key_env = "CRITIC_KEY"\n',
    )
    monkeypatch.setenv("CAUSAL_GRPO_CONFIG", str(config))
    monkeypatch.setenv("CAUSAL_GRPO_AGENTS", json.dumps({"critic": {"temperature": 0.2}}))
    context = resolve_context({})
    critic = context.agents["critic"]
    assert context.model == "gpt-small"
    # Nested settings merge: env adds the temperature, the file's endpoint stays.
    assert (critic.model, critic.base_url, critic.api_key_env, critic.temperature) == (
        "gpt-big",
        "http://h/v1",
        "CRITIC_KEY",
        0.2,
    )


@pytest.mark.parametrize(
    "content",
    [
        {"api_key": "sk-123"},
        {"model": "m", "agents": {"critic": {"model": "x", "api_key": "sk-123"}}},
        {"agents": {"judge": {"OPENAI_API_KEY": "sk-123"}}},
    ],
)
def test_config_file_with_a_key_is_rejected(tmp_path: Path, content: dict) -> None:
    config = write(tmp_path, "c.json", json.dumps(content))
    with pytest.raises(ConfigError, match="environment variable") as info:
        resolve_context({}, config)
    assert "sk-123" not in str(info.value)


def test_api_key_env_in_a_file_is_fine(tmp_path: Path) -> None:
    config = write(tmp_path, "c.json", json.dumps({"api_key_env": "MY_KEY"}))
    assert resolve_context({}, config).api_key_env == "MY_KEY"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.json", "{not json", "cannot read"),
        ("c.toml", "= broken", "cannot read"),
        ("c.json", "[1, 2]", "object at the top level"),
        ("c.json", json.dumps({"concurrency": 0}), "concurrency"),
        ("c.json", json.dumps({"no_such_setting": 1}), "no_such_setting"),
    ],
)
def test_bad_config_files_get_clear_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_context({}, write(tmp_path, name, text))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "absent.json")


def test_bad_env_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUSAL_GRPO_CONCURRENCY", "many")
    with pytest.raises(ConfigError, match="CAUSAL_GRPO_CONCURRENCY"):
        resolve_context({})
