"""Run `causal-grpo` and SIGKILL the process itself at a chosen event: a real kill -9, at a known point.

Used by the resume tests as `python kill_harness.py train ...` with `CAUSAL_GRPO_KILL=<event>:<n>`, which
kills the process at the n-th (1-based) such event:

- `start-writes`: right after a thread's `__start__` task's writes are committed (the thread then holds
  only its input checkpoint and those writes: `StateSnapshot.next` is empty);
- `writes`: right after any task's writes are committed (mid-batch);
- `checkpoint`: right after a checkpoint is committed;
- `bank-write`: in the middle of a bank update: after the store committed one of its writes to the
  experience banks or their journals, before the next;
- `replace`: between writing an export's temporary file and renaming it over the export;
- `append`: right after lines were appended to a JSONL export;
- `time`: after n milliseconds, wherever the run is (start-up included).

Without `CAUSAL_GRPO_KILL` it runs the command undisturbed. It notes in `KILL_HARNESS_LOG` (if set) the
event it died at, and with `KILL_HARNESS_COUNT=1` every event (killing nothing), so a test can draw kill
points from the events an undisturbed run has.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_armed: tuple[str, int] | None = None
_seen: dict[str, int] = {}


def _die(event: str) -> None:
    _log(f"killed at {event}")
    os.kill(os.getpid(), signal.SIGKILL)


def _log(line: str) -> None:
    log = os.environ.get("KILL_HARNESS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _hit(kind: str, detail: str = "") -> None:
    """One event of a kind happened: die if it is the armed one, else (when counting) note it."""
    _seen[kind] = _seen.get(kind, 0) + 1
    if _armed == (kind, _seen[kind]):
        _die(f"{kind} {_seen[kind]} {detail}".strip())
    elif os.environ.get("KILL_HARNESS_COUNT"):
        _log(kind)


def _hooks() -> None:
    """Patch the places where events happen (committed writes, bank writes, export writes)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.base import PutOp
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    from causal_grpo import exports

    put_writes, put, batch = AsyncSqliteSaver.aput_writes, AsyncSqliteSaver.aput, AsyncSqliteStore.abatch
    replace, append = os.replace, exports.append_lines

    async def aput_writes(self, config, writes, task_id, task_path=""):  # type: ignore[no-untyped-def]
        await put_writes(self, config, writes, task_id, task_path)
        thread = config["configurable"]["thread_id"]
        if task_path.endswith("__start__"):
            _hit("start-writes", thread)
        _hit("writes", thread)

    async def aput(self, config, checkpoint, metadata, new_versions):  # type: ignore[no-untyped-def]
        saved = await put(self, config, checkpoint, metadata, new_versions)
        _hit("checkpoint", config["configurable"]["thread_id"])
        return saved

    async def abatch(self, ops):  # type: ignore[no-untyped-def]
        ops = list(ops)
        result = await batch(self, ops)
        if any(isinstance(op, PutOp) and op.namespace[1] in ("experiences", "journal") for op in ops):
            _hit("bank-write")
        return result

    def os_replace(src, dst):  # type: ignore[no-untyped-def]
        _hit("replace", os.path.basename(dst))
        replace(src, dst)

    def append_lines(path, records):  # type: ignore[no-untyped-def]
        append(path, records)
        _hit("append", path.name)

    AsyncSqliteSaver.aput_writes = aput_writes  # type: ignore[method-assign]
    AsyncSqliteSaver.aput = aput  # type: ignore[method-assign]
    AsyncSqliteStore.abatch = abatch  # type: ignore[method-assign]
    os.replace = os_replace  # type: ignore[assignment]
    exports.append_lines = append_lines  # type: ignore[assignment]


def main() -> None:
    global _armed
    spec = os.environ.get("CAUSAL_GRPO_KILL")
    if spec:
        kind, _, n = spec.rpartition(":")
        if kind == "time":
            threading.Timer(int(n) / 1000, _die, args=(f"time {n} ms",)).start()
        else:
            _armed = (kind, int(n))
    if _armed or os.environ.get("KILL_HARNESS_COUNT"):
        _hooks()
    from causal_grpo.cli import main as cli

    sys.argv = ["causal-grpo", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
