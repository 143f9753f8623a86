"""The local model's plumbing that needs no model: finding the server, failing clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from causal_grpo.local_model import (
    LlamaServer,
    LocalModelError,
    build_llama_server,
    find_llama_server,
    server_path,
)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_prefers_the_env_var_then_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CAUSAL_GRPO_LLAMA_SERVER", raising=False)
    assert find_llama_server(cache=tmp_path) is None
    cached = _executable(server_path("9.9.9", tmp_path))
    assert find_llama_server("9.9.9", tmp_path) == cached
    given = _executable(tmp_path / "mine" / "llama-server")
    monkeypatch.setenv("CAUSAL_GRPO_LLAMA_SERVER", str(given))
    assert find_llama_server("9.9.9", tmp_path) == given


def test_a_bad_env_var_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUSAL_GRPO_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(LocalModelError, match="not an executable file"):
        find_llama_server(cache=tmp_path)


def test_build_without_cmake_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(LocalModelError, match="needs cmake and c\\+\\+ on PATH"):
        build_llama_server(cache=tmp_path, say=lambda _: None)


def test_a_server_that_exits_at_once_fails_with_its_log(tmp_path: Path) -> None:
    false = Path(shutil.which("false") or "/bin/false")
    server = LlamaServer(false, tmp_path / "model.gguf", log_path=tmp_path / "server.log")
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.command[server.command.index("--alias") + 1] == "gemma"
    assert server.command[server.command.index("-c") + 1] == str(4 * 4096)
    with pytest.raises(LocalModelError, match="llama-server exited with 1"):
        server.start(timeout=10)
