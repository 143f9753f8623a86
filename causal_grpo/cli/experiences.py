"""`causal-grpo experiences`: list, show, export, import, prune, diff and roll back the experience banks of a run.

A run's banks live in `<home>/runs/<run>/state.sqlite`, or in the database `--db` (before the command) names, e.g.
a PostgreSQL one that every run of a fleet shares; the logic is `causal_grpo.memory.manage`. Commands that
write (import, prune, history --rollback) also rewrite the run's `<bank>_experiences.json`. Run them while no
training writes the same run: the bank locks hold within one process only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from langgraph.store.base import BaseStore
from rich.console import Console
from rich.table import Table
from rich.text import Text

from causal_grpo.api import STATE_FILE, run_dir
from causal_grpo.cli.common import DB_OPTION, HOME_OPTION, fail, folded, output_console
from causal_grpo.errors import CausalGrpoError
from causal_grpo.exports import atomic_write, write_bank
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.manage import (
    DEFAULT_MIN_USES,
    BankDiff,
    ManageError,
    bank_file,
    bank_of,
    diff_records,
    dump_records,
    export_bank,
    import_bank,
    load_records,
    prune,
    success_rate,
    write_run_exports,
)
from causal_grpo.memory.schemas import BANKS, Experience

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

T = TypeVar("T")
BANK_CHOICES = ", ".join([*BANKS, "all"])
RUN_OPTION = Annotated[str, typer.Option(help="Run name, as in `train`.")]
CONTENT_WIDTH = 80


def _banks(value: str | None) -> str | None:
    if value is not None and value != "all" and value not in BANKS:
        raise typer.BadParameter(f"banks are {BANK_CHOICES}")
    return value


BANK_OPTION = Annotated[str, typer.Option(callback=_banks, help=f"One of {BANK_CHOICES}.")]


def _chosen(bank: str | None) -> list[str]:
    return list(BANKS) if bank in (None, "all") else [bank]


_db: ContextVar[str | None] = ContextVar("experiences_db", default=None)


@app.callback()
def _options(db: DB_OPTION = None) -> None:
    _db.set(db)  # asyncio.run copies this context into the command's coroutine


@asynccontextmanager
async def _store(home: Path, run: str, *, create: bool = False) -> AsyncIterator[BaseStore]:
    """A run's store (`--db`, else its state.sqlite); a missing run is an error unless `create` (import makes it)."""
    if db := _db.get():
        async with open_backends(db) as backends:
            yield backends.store
        return
    path = run_dir(home, run) / STATE_FILE
    if not create and not path.exists():
        raise ManageError(f"no run {run!r} in {Path(home).expanduser()} (no {path})")
    async with open_backends(path) as backends:
        yield backends.store


def _run(work: Callable[[Console], Coroutine[Any, Any, T]]) -> T:
    """Run one command's coroutine; our errors end it with one line."""
    console = output_console(highlight=False)
    try:
        return asyncio.run(work(console))
    except CausalGrpoError as exc:
        fail(console, str(exc))


def _short(text: str) -> str:
    return text if len(text) <= CONTENT_WIDTH else text[: CONTENT_WIDTH - 1] + "…"


def _rate(experience: Experience) -> str:
    rate = success_rate(experience)
    return "-" if rate is None else f"{rate:.0%}"


def _table(bank: str, experiences: list[Experience]) -> Table:
    live = sum(not e.deleted for e in experiences)
    table = Table(title=f"{bank}: {live} live", title_justify="left")
    for column in ("id", "category", "problem_type", "success", "uses", "rate"):
        # ids and counters stay whole; the labels fold on a narrow terminal
        numeric = column in ("success", "uses", "rate")
        table.add_column(column, no_wrap=numeric or column == "id", justify="right" if numeric else "left")
    table.add_column("content")
    for e in experiences:
        content = Text(_short(e.content) + (" (deleted)" if e.deleted else ""), style="dim" if e.deleted else "")
        table.add_row(e.id, e.category, e.problem_type, str(e.success_count), str(e.usage_count), _rate(e), content)
    return table


@app.command("list")
def list_experiences(
    bank: BANK_OPTION = "all",
    run: RUN_OPTION = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
    as_json: Annotated[bool, typer.Option("--json", help="JSON per bank, for machines.")] = False,
    include_deleted: Annotated[bool, typer.Option(help="Show soft-deleted experiences too.")] = False,
) -> None:
    """A table of each bank's experiences: counters, success rate, content."""

    async def work(console: Console) -> None:
        async with _store(home, run) as store:
            found = {b: await ExperienceBank(b, store).list(include_deleted=include_deleted) for b in _chosen(bank)}
        if as_json:
            out = {b: [{**e.to_spec(), "deleted": e.deleted} for e in es] for b, es in found.items()}
            typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
            return
        for b, experiences in found.items():
            console.print(folded(_table(b, experiences)) if experiences else f"{b}: empty")

    _run(work)


@app.command("show")
def show(
    experience_id: Annotated[str, typer.Argument(metavar="ID", help="An id such as G1-007 (S-, G1-, G2-, G3-, C-).")],
    run: RUN_OPTION = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
) -> None:
    """The full record of one experience as JSON, history and provenance included."""

    async def work(console: Console) -> None:
        async with _store(home, run) as store:
            found = await ExperienceBank(bank_of(experience_id), store).get(experience_id)
        if found is None:
            raise ManageError(f"no experience {experience_id} in run {run}")
        typer.echo(json.dumps(found.model_dump(mode="json"), ensure_ascii=False, indent=1))

    _run(work)


@app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="A JSON file (one bank) or a folder (one <bank>_experiences.json each).")],
    bank: BANK_OPTION = "all",
    run: RUN_OPTION = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
) -> None:
    """Write banks as JSON lists of whole records (tombstones and history included), ready for `import`."""

    async def work(console: Console) -> None:
        async with _store(home, run) as store:
            records = {b: await export_bank(store, b) for b in _chosen(bank)}
        if bank == "all" or out.is_dir():
            for b, rs in records.items():
                write_bank(out, b, rs)
                console.print(f"{b}: {len(rs)} record(s) -> {bank_file(out, b)}")
        else:
            atomic_write(out, dump_records(records[bank]))
            console.print(f"{bank}: {len(records[bank])} record(s) -> {out}")

    _run(work)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A JSON list of records, or a folder of <bank>_experiences.json.")],
    bank: Annotated[
        str | None, typer.Option(callback=_banks, help=f"Target bank ({BANK_CHOICES}); required for a file.")
    ] = None,
    renumber: Annotated[
        bool, typer.Option(help="Give fresh ids (needed when the bank is not empty); skips duplicates.")
    ] = False,
    run: RUN_OPTION = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
) -> None:
    """Load exported experiences into a run's banks (the run is created if new)."""

    async def work(console: Console) -> None:
        if path.is_dir():
            sources = {b: bank_file(path, b) for b in _chosen(bank) if bank_file(path, b).is_file()}
            if not sources:
                raise ManageError(f"{path} holds no <bank>_experiences.json for {bank or 'any bank'}")
        elif bank in (None, "all"):
            raise ManageError("say which bank the file goes into with --bank")
        else:
            sources = {bank: path}
        loaded = {b: load_records(p) for b, p in sources.items()}  # every file is checked before any write
        async with _store(home, run, create=True) as store:
            if not renumber:
                taken = [b for b in loaded if await ExperienceBank(b, store).list(include_deleted=True)]
                if taken:
                    raise ManageError(
                        f"bank(s) {', '.join(taken)} of run {run} are not empty; import into an empty run, "
                        "or pass --renumber to give the imported experiences fresh ids"
                    )
            for b, records in loaded.items():
                result = await import_bank(store, b, records, renumber=renumber, source=str(sources[b]))
                moved = ", ".join(f"{old}->{new}" for old, new in result.imported if old != new)
                skipped = "; ".join(f"{old} ({why})" for old, why in result.skipped)
                console.print(
                    f"{b}: imported {len(result.imported)}"
                    + (f" ({moved})" if moved else "")
                    + (f", skipped {len(result.skipped)}: {skipped}" if skipped else ""),
                    markup=False,
                )
            await write_run_exports(store, run_dir(home, run), list(loaded))

    _run(work)


@app.command("prune")
def prune_command(
    bank: Annotated[str, typer.Option(callback=_banks, help=f"Which bank ({BANK_CHOICES}).")],
    min_success_rate: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Drop experiences below this success rate ...")
    ] = None,
    min_uses: Annotated[int, typer.Option(min=1, help="... once used at least this often.")] = DEFAULT_MIN_USES,
    dedupe: Annotated[bool, typer.Option(help="Drop near-duplicates, keeping the most used.")] = False,
    max_size: Annotated[int | None, typer.Option(min=0, help="Keep this many, the most useful.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print what would go; change nothing.")] = False,
    run: RUN_OPTION = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
) -> None:
    """Soft-delete experiences by rule (recorded in their history; `history ID --rollback K` of a delete undoes it)."""
    if min_success_rate is None and not dedupe and max_size is None:
        raise typer.BadParameter("give a rule: --min-success-rate, --dedupe or --max-size")

    async def work(console: Console) -> None:
        async with _store(home, run) as store:
            pruned = {
                b: await prune(
                    store,
                    b,
                    min_success_rate=min_success_rate,
                    min_uses=min_uses,
                    dedupe=dedupe,
                    max_size=max_size,
                    dry_run=dry_run,
                )
                for b in _chosen(bank)
            }
            if not dry_run:
                await write_run_exports(store, run_dir(home, run), [b for b, p in pruned.items() if p])
        verb = "would soft-delete" if dry_run else "soft-deleted"
        for b, gone in pruned.items():
            console.print(f"{b}: {verb} {len(gone)}")
            for p in gone:
                console.print(f"  {p.id} [{p.rule}] {p.reason}: {_short(p.content)}", markup=False)

    _run(work)


async def _side(name: str, home: Path, banks: list[str]) -> dict[str, list[Experience]]:
    """One side of a diff: an export file or folder if the path exists, else a run's banks."""
    path = Path(name)
    if path.is_dir():
        return {b: load_records(bank_file(path, b)) if bank_file(path, b).is_file() else [] for b in banks}
    if path.is_file():
        if len(banks) > 1:
            guessed = [b for b in banks if path.name == bank_file(path.parent, b).name]
            if not guessed:
                raise ManageError(f"say which bank {path} holds with --bank")
            banks = guessed
        return {banks[0]: load_records(path)}
    async with _store(home, name) as store:
        return {b: await ExperienceBank(b, store).list(include_deleted=True) for b in banks}


def _print_diff(console: Console, bank: str, diff: BankDiff) -> None:
    console.print(f"{bank}: {len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed")
    for e in diff.added:
        console.print(f"  + {e.id} {_short(e.content)}", markup=False)
    for e in diff.removed:
        console.print(f"  - {e.id} {_short(e.content)}", markup=False)
    for change in diff.changed:
        fields = "; ".join(f"{f}: {old!r} -> {new!r}" for f, (old, new) in change.fields.items())
        console.print(f"  ~ {change.id} {fields}", markup=False)


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="A run name, or an export file or folder.")],
    b: Annotated[str, typer.Argument(help="A run name, or an export file or folder.")],
    bank: BANK_OPTION = "all",
    home: HOME_OPTION = Path("~/.causal-grpo"),
) -> None:
    """Live experiences added, removed and changed (content, counters) from A to B, matched by id."""

    async def work(console: Console) -> None:
        old, new = await _side(a, home, _chosen(bank)), await _side(b, home, _chosen(bank))
        for name in [n for n in old if n in new]:
            _print_diff(console, name, diff_records(old[name], new[name]))

    _run(work)


async def _undo(bank: ExperienceBank, experience_id: str, index: int, run: str) -> Experience:
    """Undo edit `index`: restore the state right after the edit before it (recorded as a new rollback edit)."""
    found = await bank.get(experience_id)
    if found is None:
        raise ManageError(f"no experience {experience_id} in run {run}")
    last = len(found.history) - 1
    if index == 0:
        raise ManageError(f"edit 0 of {experience_id} is its add; undo a later edit (1..{last}), or prune to delete it")
    if not 1 <= index <= last:
        raise ManageError(f"{experience_id} has edits 0..{last}; --rollback takes 1..{last}, not {index}")
    return await bank.rollback(experience_id, index - 1)


@app.command("history")
def history(
    experience_id: Annotated[str, typer.Argument(metavar="ID", help="An id such as G1-007.")],
    rollback: Annotated[
        int | None,
        typer.Option(
            help="Undo edit K: back to the state just before it, content and live/deleted (a new edit); "
            "the K of a delete brings the experience back."
        ),
    ] = None,
    run: RUN_OPTION = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
) -> None:
    """An experience's edit history (index, op key, op, old -> new, time); `--rollback K` undoes edit K."""

    async def work(console: Console) -> None:
        bank_name = bank_of(experience_id)
        async with _store(home, run) as store:
            bank = ExperienceBank(bank_name, store)
            if rollback is not None:
                undone = await _undo(bank, experience_id, rollback, run)
                await write_run_exports(store, run_dir(home, run), [bank_name])
                state = "deleted" if undone.deleted else "live"
                console.print(
                    f"{experience_id}: edit {rollback} undone, back to its state after edit {rollback - 1} "
                    f"({state}): {undone.content}",
                    markup=False,
                )
            found = await bank.get(experience_id)
        if found is None:
            raise ManageError(f"no experience {experience_id} in run {run}")
        table = Table(title=f"{experience_id}{' (deleted)' if found.deleted else ''}", title_justify="left")
        for column in ("#", "op", "op_key", "old -> new", "at"):
            table.add_column(column, no_wrap=column in ("#", "op"), min_width=len(column))
        for index, edit in enumerate(found.history):
            change = (edit.new or "") if edit.old in (None, edit.new) else f"{edit.old} -> {edit.new}"
            table.add_row(str(index), edit.op, Text(edit.key), Text(change), edit.at)
        console.print(folded(table))

    _run(work)
