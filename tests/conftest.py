"""Shared fixtures: one simulator per session, fresh stores, the anyio backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from causal_grpo.context import Context
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer


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
