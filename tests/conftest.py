"""Shared fixtures: one simulator per session, fresh stores, PostgreSQL databases, the anyio backend.

PostgreSQL tests take the server from `CAUSAL_GRPO_TEST_DB` (default: the local one with trust auth) and
create databases of their own, dropped afterwards. With no server reachable they skip, unless
`CAUSAL_GRPO_REQUIRE_POSTGRES=1` (CI) turns that into a failure. Pages are rendered in headless Chromium
(`render_page`); without `chromium` those tests skip, unless `CAUSAL_GRPO_REQUIRE_CHROMIUM=1` (CI).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from causal_grpo.memory.results import open_results
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from causal_grpo.context import Context
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # without these Chromium keeps calling out, and this machine's closed network refuses it
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def render_page(tmp_path: Path) -> Callable[..., str]:
    """`render_page(page, *flags)`: headless Chromium loads a local page; returns its stdout (e.g. --dump-dom)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        reason = "headless chromium is not installed (apt-get install chromium)"
        if os.environ.get("CAUSAL_GRPO_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason + " (CAUSAL_GRPO_REQUIRE_CHROMIUM=1)")
        pytest.skip(reason)

    def render(page: Path, *flags: str) -> str:
        profile = tmp_path / f"chromium-profile-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, page.as_uri()],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout

    return render


PG_SERVER = os.environ.get("CAUSAL_GRPO_TEST_DB", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped on exit."""
    try:
        admin = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        reason = f"no PostgreSQL server at CAUSAL_GRPO_TEST_DB ({urlsplit(PG_SERVER).hostname}): {exc}".splitlines()[0]
        if os.environ.get("CAUSAL_GRPO_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (CAUSAL_GRPO_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    name = f"causal_grpo_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(PG_SERVER)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def new_database() -> Callable[[], AbstractContextManager[str]]:
    """`with new_database() as url:` a fresh PostgreSQL database (see `fresh_database`)."""
    return fresh_database


# The only fields that legitimately differ between two runs of the same work: an experience's wall-clock
# stamps (`created_at`, `updated_at`) and a rollout's wall time (`seconds`). Everything else (scaffolds,
# answers, rewards and their details, token usage, extractions, experience ids, contents and counters)
# must match exactly.
CLOCK_FIELDS = {"created_at", "updated_at", "seconds"}


def without_clock(value: Any) -> Any:
    """`value` with every clock field left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def read_exports(folder: Path) -> dict[str, Any]:
    """Every export file of a run folder, parsed, without clock fields."""
    found: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".jsonl":
            found[path.name] = [without_clock(json.loads(line)) for line in path.read_text().splitlines()]
        elif path.name.endswith("_experiences.json"):
            found[path.name] = without_clock(json.loads(path.read_text()))
    return found


def assert_same_results(a: str | Path, b: str | Path, run: str) -> None:
    """Two results stores (a PostgreSQL URL or a results.db) hold the same rows of `run`, clocks aside."""
    first, second = open_results(a), open_results(b)
    try:
        rollouts = [without_clock([r.model_dump() for r in db.rollouts(run)]) for db in (first, second)]
        problems = [[p.model_dump(exclude={"seconds"}) for p in db.problems(run)] for db in (first, second)]
    finally:
        first.close()
        second.close()
    assert rollouts[0] and rollouts[0] == rollouts[1]
    assert problems[0] and problems[0] == problems[1]


@pytest.fixture(scope="session")
def exports() -> Callable[[Path], dict[str, Any]]:
    """`exports(run folder)`: its export files, parsed, without clock fields."""
    return read_exports


@pytest.fixture(scope="session")
def same_results() -> Callable[[str | Path, str | Path, str], None]:
    """`same_results(a, b, run)` asserts two results stores hold the same rows of the run."""
    return assert_same_results


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def imported_benchmark(name: str) -> Iterator[ModuleType]:
    """A script of benchmarks/ as a module, its sibling scripts importable; every one of them unloaded after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module(name)
    for script in BENCHMARKS.glob("*.py"):
        sys.modules.pop(script.stem, None)


@pytest.fixture(scope="session")
def benchmark() -> Callable[[str], AbstractContextManager[ModuleType]]:
    """`with benchmark("bench_training") as module:` a benchmark script, imported for the block."""
    return imported_benchmark


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    """The simulator (a test double for the model) over real HTTP on loopback, for the whole session."""
    with SimulatorServer(SimulatorConfig(seed=7)) as server:
        yield server


@pytest.fixture
def make_sim_context(simulator: SimulatorServer) -> Callable[[str], Context]:
    """Contexts for small, fast runs against the session simulator, by run name."""

    def make(run: str) -> Context:
        return Context(
            run=run,
            model="simulated",
            base_url=simulator.base_url,
            rollouts=3,
            generators=[1, 2],
            concurrency=8,
            max_retries=1,
            seed=7,
        )

    return make


@pytest.fixture
def sim_context(make_sim_context: Callable[[str], Context], request: pytest.FixtureRequest) -> Context:
    """A small, fast run against the session simulator; each test gets its own run name."""
    return make_sim_context(request.node.name[:40])


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def checkpointer() -> InMemorySaver:
    return InMemorySaver()
