"""Resolve a run's `Context` from CLI flags, then `CAUSAL_GRPO_*` env vars, then an optional config file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from causal_grpo.context import Context
from causal_grpo.errors import CausalGrpoError

ENV_PREFIX = "CAUSAL_GRPO_"
# The usual OpenAI variables, honoured when the project's own are not set.
OPENAI_FALLBACKS = {"model": "OPENAI_MODEL", "base_url": "OPENAI_BASE_URL"}


class ConfigError(CausalGrpoError, ValueError):
    """A config file or setting that cannot be used; the message says which and why."""


class _EnvBase(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")


def _env_field(name: str) -> tuple[Any, Any]:
    annotation = Context.model_fields[name].annotation
    aliases = [f"{ENV_PREFIX}{name.upper()}"]
    if name in OPENAI_FALLBACKS:
        aliases.append(OPENAI_FALLBACKS[name])
    return annotation | None, Field(default=None, validation_alias=AliasChoices(*aliases))


# One env var per Context field (complex ones as JSON), so a new field is configurable at once.
Settings: type[BaseSettings] = create_model(
    "Settings",
    __base__=_EnvBase,
    __doc__="Context values given by environment variables; unset ones stay None.",
    config=(Path | None, Field(default=None, validation_alias=f"{ENV_PREFIX}CONFIG")),
    **{name: _env_field(name) for name in Context.model_fields},
)


def _secret_paths(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).lower() in {"api_key", "apikey", "openai_api_key"}:
                found.append(where)
            found.extend(_secret_paths(item, where))
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _secret_paths(item, f"{path}[{i}]")]
    return []


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or TOML config file (by suffix) and refuse any API key in it.

    Raises:
        ConfigError: the file is missing, unparsable, not a mapping, or holds a key.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON/TOML object at the top level")
    if secrets := _secret_paths(data):
        raise ConfigError(
            f"config file {path} holds an API key field ({', '.join(secrets)}); keys never go in files: "
            "export the key in an environment variable and name that variable with `api_key_env`"
        )
    return data


def _merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def resolve_context(flags: dict[str, Any], config_file: Path | None = None) -> Context:
    """Build the run's Context: CLI flags > env vars > config file > defaults.

    Args:
        flags: Context field values from the command line; None means "not given".
        config_file: Optional JSON/TOML file; else `$CAUSAL_GRPO_CONFIG`, if set.

    Raises:
        ConfigError: a bad config file, env var or flag value, named in the message.
    """
    try:
        env = Settings().model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(f"bad {ENV_PREFIX}* environment variable: {_short(exc)}") from None
    path = config_file or env.pop("config", None)
    env.pop("config", None)
    file_values = read_config_file(Path(path)) if path else {}
    merged = _merge(_merge(file_values, _given(env)), _given(flags))
    try:
        return Context.model_validate(merged)
    except ValidationError as exc:
        source = f" (config file {path})" if path else ""
        raise ConfigError(f"bad settings{source}: {_short(exc)}") from None


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
