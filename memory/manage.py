"""Experience bank management: export, import, prune and diff banks in any LangGraph `BaseStore`.

Export format: a JSON list of records, each `Experience.to_spec()` (the specification's shape plus provenance)
followed by `deleted`, `history` and `counted`, in id order, tombstones included. That is the whole record, so
export -> import into an empty bank -> export gives the same JSON, and the imported bank's sequence continues
after the highest id, so no id is ever reused. Import also takes the specification's shape alone (a run's own
`<bank>_experiences.json`): every field but `id` and `content` is optional.

Import keeps ids, and only into an empty bank; with `renumber` the live records get fresh ids from the bank's
sequence instead (tombstones and duplicates of live content are skipped), each with an `add` edit keyed
`import:<old id>@<time>` in its history. Pruning soft-deletes: a `delete` edit keyed `prune:<rule>@<time>`,
which `ExperienceBank.rollback` can undo; ids are never renumbered or reused. Every write holds the bank's lock
(`ExperienceBank.locked`), so it never interleaves with `apply` or `record_usage` in the same process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Literal

from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.ops import check_content
from causal_grpo.memory.schemas import PREFIXES, Edit, Experience, make_id, namespace, parse_id, utcnow
from langgraph.store.base import BaseStore, PutOp
from pydantic import ValidationError

from causal_grpo.errors import CausalGrpoError
from causal_grpo.exports import write_bank

SIMILARITY = 0.9
DEFAULT_MIN_USES = 5
DIFF_FIELDS = ("content", "category", "problem_type", "success_count", "usage_count")

Rule = Literal["success_rate", "duplicate", "max_size"]


class ManageError(CausalGrpoError, ValueError):
    """A bank management request that cannot be carried out; the message names the file, record or bank."""


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote: (source id, new id) pairs, and (source id, reason) pairs it skipped."""

    bank: str
    imported: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Pruned:
    """One experience a prune rule soft-deletes (or would, in a dry run)."""

    id: str
    rule: Rule
    reason: str
    content: str


@dataclass(frozen=True)
class Change:
    """An experience in both banks whose fields differ: field -> (old, new)."""

    id: str
    fields: dict[str, tuple[Any, Any]]


@dataclass(frozen=True)
class BankDiff:
    """Live experiences added, removed and changed from bank A to bank B, matched by id."""

    added: list[Experience]
    removed: list[Experience]
    changed: list[Change]

    @property
    def empty(self) -> bool:
        """Whether the two banks hold the same live experiences."""
        return not (self.added or self.removed or self.changed)


def bank_file(folder: Path, bank: str) -> Path:
    """The file of one bank in an export folder (the name a run's own exports use)."""
    return Path(folder) / f"{bank}_experiences.json"


def export_record(experience: Experience) -> dict[str, Any]:
    """The whole record in export order: the specification's fields, then deleted, history and counted."""
    dumped = experience.model_dump(mode="json")
    return {**experience.to_spec(), **{k: dumped[k] for k in ("deleted", "history", "counted")}}


async def export_bank(store: BaseStore, bank: str) -> list[dict[str, Any]]:
    """Every record of a bank, tombstones included, in id order (see the module docstring)."""
    return [export_record(e) for e in await ExperienceBank(bank, store).list(include_deleted=True)]


def dump_records(records: list[dict[str, Any]]) -> str:
    """Records as export JSON text (the format of a run's `<bank>_experiences.json`)."""
    return json.dumps(records, ensure_ascii=False, indent=1) + "\n"


async def write_run_exports(store: BaseStore, folder: Path, banks: Sequence[str]) -> None:
    """Rewrite a run's `<bank>_experiences.json` (live records, specification shape) after a bank changed."""
    for bank in banks:
        write_bank(folder, bank, [e.to_spec() for e in await ExperienceBank(bank, store).list()])


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}" for err in exc.errors()[:3])


def parse_records(data: Any, source: str) -> list[Experience]:
    """Validate untrusted experience records (a decoded JSON list); errors name `source` and the index.

    Content is normalised as the extractor's is (one line) and must pass the same length checks.

    Raises:
        ManageError: The data is not a list, or a record is invalid.
    """
    if not isinstance(data, list):
        raise ManageError(f"{source}: expected a JSON list of experience records, got {type(data).__name__}")
    records: list[Experience] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        where = f"{source}: record {index}"
        if not isinstance(item, dict):
            raise ManageError(f"{where}: expected an object, got {type(item).__name__}")
        try:
            record = Experience.model_validate(item)
        except ValidationError as exc:
            raise ManageError(f"{where}: {_describe(exc)}") from None
        content, reason = check_content(record.content)
        if reason:
            raise ManageError(f"{where} ({record.id}): {reason}")
        if not 0 <= record.success_count <= record.usage_count:
            raise ManageError(f"{where} ({record.id}): needs 0 <= success_count <= usage_count")
        if record.id in seen:
            raise ManageError(f"{where}: id {record.id!r} repeats record {seen[record.id]}")
        seen[record.id] = index
        records.append(record.model_copy(update={"content": content}))
    return records


def load_records(path: Path) -> list[Experience]:
    """Read and validate a JSON file of experience records (see `parse_records`).

    Raises:
        ManageError: The file cannot be read, is not JSON, or holds an invalid record.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManageError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ManageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManageError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return parse_records(data, str(path))


def _normal(text: str) -> str:
    """Content compared for duplicates: lower-case words only."""
    return " ".join(re.findall(r"\w+", text.lower()))


def near_duplicate(a: str, b: str, threshold: float = SIMILARITY) -> bool:
    """Whether two contents are equal once normalised, or `difflib`-similar at `threshold` or more."""
    x, y = _normal(a), _normal(b)
    if x == y:
        return True
    matcher = SequenceMatcher(None, x, y, autojunk=False)
    # the cheap upper bounds first: most pairs are far apart
    return (
        matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold
    )


def _kept_ids(records: Sequence[Experience], bank: str, source: str) -> int:
    """Check that records may keep their ids in `bank`; returns the number after the highest id."""
    highest = 0
    for index, record in enumerate(records):
        parsed = parse_id(record.id)
        if parsed is None or parsed[0] != bank or record.id != make_id(bank, parsed[1]) or parsed[1] < 1:
            raise ManageError(
                f"{source}: record {index}: id {record.id!r} is not an id of bank {bank} "
                f"(they look like {make_id(bank, 1)}); import with renumbering to give fresh ids"
            )
        highest = max(highest, parsed[1])
    return highest + 1


async def import_bank(
    store: BaseStore,
    bank: str,
    records: Sequence[Experience],
    *,
    renumber: bool = False,
    source: str = "import",
    now: str | None = None,
) -> ImportResult:
    """Write validated records (`load_records`) into a bank.

    Args:
        store: The store holding the bank.
        bank: The target bank.
        records: The records, in the order to number them.
        renumber: Give live records fresh ids from the bank's sequence (tombstones and duplicates of live
            content are skipped); without it the bank must be empty and the records keep their ids.
        source: Names the records' origin in error messages.
        now: ISO timestamp of the import edits (default: the current UTC time).

    Raises:
        ManageError: The bank is not empty and `renumber` is off, or an id does not belong to the bank.
    """
    experiences = ExperienceBank(bank, store)
    async with experiences.locked():
        existing = await experiences.list(include_deleted=True)
        number = await experiences.next_number()
        result = ImportResult(bank=bank)
        if not renumber:
            if existing:
                raise ManageError(
                    f"bank {bank} already holds {len(existing)} experience(s); import into an empty bank, "
                    "or renumber to give the imported ones fresh ids"
                )
            number = max(number, _kept_ids(records, bank, source))
            written = list(records)
            result.imported.extend((r.id, r.id) for r in written)
        else:
            at = now or utcnow()
            live = {_normal(e.content): e.id for e in existing if not e.deleted}
            written = []
            for record in records:
                twin = live.get(_normal(record.content))
                if record.deleted or twin:
                    result.skipped.append((record.id, "deleted" if record.deleted else f"duplicate of {twin}"))
                    continue
                new_id = make_id(bank, number)
                number += 1
                live[_normal(record.content)] = new_id
                edit = Edit(key=f"import:{record.id}@{at}", op="add", new=record.content, at=at)
                written.append(
                    record.model_copy(update={"id": new_id, "updated_at": at, "history": [*record.history, edit]})
                )
                result.imported.append((record.id, new_id))
        puts = [PutOp(namespace(bank), r.id, r.model_dump(mode="json")) for r in written]
        await store.abatch([*puts, PutOp(namespace(bank, "sequence"), "next", {"next": number})])
    return result


def success_rate(experience: Experience) -> float | None:
    """Successes over uses, or None for an unused experience."""
    return experience.success_count / experience.usage_count if experience.usage_count else None


def plan_prune(
    live: Sequence[Experience],
    *,
    min_success_rate: float | None = None,
    min_uses: int = DEFAULT_MIN_USES,
    dedupe: bool = False,
    max_size: int | None = None,
) -> list[Pruned]:
    """What each rule removes from live experiences, the rules applied in this order to what is left.

    Args:
        live: The bank's live experiences.
        min_success_rate: Remove experiences used at least `min_uses` times whose success rate is lower.
        min_uses: See `min_success_rate` (at least 1).
        dedupe: Remove near-duplicates (`near_duplicate`), keeping the one used most (the older on a tie).
        max_size: Keep this many, the most useful by smoothed success rate (`Experience.usefulness`).

    Raises:
        ManageError: A threshold out of range.
    """
    if min_success_rate is not None and not 0.0 <= min_success_rate <= 1.0:
        raise ManageError(f"the minimum success rate must be between 0 and 1, not {min_success_rate}")
    if min_uses < 1 or (max_size is not None and max_size < 0):
        raise ManageError("the minimum uses must be at least 1 and the maximum size at least 0")
    pruned: list[Pruned] = []

    def drop(experience: Experience, rule: Rule, reason: str) -> None:
        pruned.append(Pruned(experience.id, rule, reason, experience.content))

    remaining = sorted(live, key=lambda e: e.number)
    if min_success_rate is not None:
        kept = []
        for e in remaining:
            rate = success_rate(e)
            if e.usage_count >= min_uses and rate is not None and rate < min_success_rate:
                drop(e, "success_rate", f"success rate {rate:.2f} < {min_success_rate} over {e.usage_count} uses")
            else:
                kept.append(e)
        remaining = kept
    if dedupe:
        kept = []
        for e in sorted(remaining, key=lambda e: (-e.usage_count, e.number)):
            twin = next((k for k in kept if near_duplicate(e.content, k.content)), None)
            if twin:
                drop(e, "duplicate", f"near-duplicate of {twin.id}")
            else:
                kept.append(e)
        remaining = sorted(kept, key=lambda e: e.number)
    if max_size is not None and len(remaining) > max_size:
        ranked = sorted(remaining, key=lambda e: (-e.usefulness, -e.usage_count, e.number))
        for e in sorted(ranked[max_size:], key=lambda e: e.number):
            drop(e, "max_size", f"usefulness {e.usefulness:.2f} is not among the top {max_size}")
    return pruned


async def prune(
    store: BaseStore,
    bank: str,
    *,
    min_success_rate: float | None = None,
    min_uses: int = DEFAULT_MIN_USES,
    dedupe: bool = False,
    max_size: int | None = None,
    dry_run: bool = False,
    now: str | None = None,
) -> list[Pruned]:
    """Soft-delete the live experiences the rules select (see `plan_prune`); a dry run writes nothing.

    Each deletion is a `delete` edit in the experience's history, so `ExperienceBank.rollback` restores it.
    """
    experiences = ExperienceBank(bank, store)
    async with experiences.locked():
        live = {e.id: e for e in await experiences.list()}
        pruned = plan_prune(
            list(live.values()), min_success_rate=min_success_rate, min_uses=min_uses, dedupe=dedupe, max_size=max_size
        )
        if pruned and not dry_run:
            at = now or utcnow()
            puts = []
            for p in pruned:
                record = live[p.id]
                edit = Edit(key=f"prune:{p.rule}@{at}", op="delete", old=record.content, new=record.content, at=at)
                gone = record.model_copy(update={"deleted": True, "updated_at": at, "history": [*record.history, edit]})
                puts.append(PutOp(namespace(bank), p.id, gone.model_dump(mode="json")))
            await store.abatch(puts)
    return pruned


def diff_records(a: Sequence[Experience], b: Sequence[Experience]) -> BankDiff:
    """Live experiences added, removed and changed (content, category, problem type, counters) from A to B."""
    old = {e.id: e for e in a if not e.deleted}
    new = {e.id: e for e in b if not e.deleted}
    changed = []
    for i in sorted(old.keys() & new.keys(), key=lambda i: old[i].number):
        fields = {f: (getattr(old[i], f), getattr(new[i], f)) for f in DIFF_FIELDS}
        fields = {f: pair for f, pair in fields.items() if pair[0] != pair[1]}
        if fields:
            changed.append(Change(i, fields))
    return BankDiff(
        added=sorted((e for i, e in new.items() if i not in old), key=lambda e: e.number),
        removed=sorted((e for i, e in old.items() if i not in new), key=lambda e: e.number),
        changed=changed,
    )


async def diff_banks(store_a: BaseStore, store_b: BaseStore, bank: str) -> BankDiff:
    """The difference of one bank between two stores (two runs), as `diff_records`."""
    return diff_records(
        await ExperienceBank(bank, store_a).list(include_deleted=True),
        await ExperienceBank(bank, store_b).list(include_deleted=True),
    )


def bank_of(experience_id: str) -> str:
    """The bank an id's prefix names.

    Raises:
        ManageError: The id has no known prefix.
    """
    parsed = parse_id(experience_id)
    if parsed is None:
        prefixes = ", ".join(f"{p}-" for p in PREFIXES.values())
        raise ManageError(f"{experience_id!r} is not an experience id (they start with {prefixes})")
    return parsed[0]
