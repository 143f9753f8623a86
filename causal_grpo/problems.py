"""Problems and datasets: the shipped AIME 2024, AIME 2025 and Physics sets, and users' own files.

A dataset is a JSONL file (one problem object a line) or a JSON array of problem objects. Each object needs
`text` and `answer` (a string or a number; numbers keep the exact text they were written with); `id`, `unit`,
`domain` and `topic` are optional, other keys are ignored. A missing `id` becomes `<file stem>_<NNN>` from
the problem's 1-based position. A user's problem is physics when it says `"domain": "physics"` or carries a
`unit`, else math. A problem's text is at most `MAX_TEXT_CHARS` characters (the longest shipped one has
1,895) and its answer at most `MAX_ANSWER_CHARS`; a longer one is refused with its file and line.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from causal_grpo.errors import DatasetError

Domain = Literal["math", "physics"]
Format = Literal["jsonl", "json"]

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TEXT_CHARS = 20_000  # per problem; ten times the longest shipped problem (1,895 characters)
MAX_ANSWER_CHARS = 200  # per answer; the longest shipped one has 8 ('3.52e-19')


class Problem(BaseModel):
    """One problem with its reference answer."""

    id: str
    text: str
    answer: str
    unit: str | None = None
    dataset: str
    domain: Literal["math", "physics"]
    topic: str | None = None

    @property
    def kind(self) -> str:
        """What the problem is about in words ('physics mechanics: vectors'), for matching experiences' types."""
        return f"{self.domain} {self.topic or ''}".strip()


class DatasetFile(BaseModel):
    """One shipped data file as `data/dataset_config.json` describes it."""

    file: str
    format: Format
    domain: Domain
    description: str


class Collection(BaseModel):
    """A named concatenation of shipped datasets, such as 'full'."""

    includes: list[str] = Field(min_length=1)
    description: str


class DatasetConfig(BaseModel):
    """The shipped datasets and collections."""

    datasets: dict[str, DatasetFile]
    collections: dict[str, Collection]


class DatasetInfo(BaseModel):
    """A shipped dataset or collection with its problem count, for listings."""

    name: str
    count: int
    domains: list[Domain]
    files: list[str]
    description: str


class _RawNumber(str):
    """A JSON number kept as the text it was written with, so '3.51e15' stays '3.51e15'."""


@cache
def dataset_config() -> DatasetConfig:
    """The shipped dataset configuration (read once from package data)."""
    text = resources.files("causal_grpo").joinpath("data", "dataset_config.json").read_text(encoding="utf-8")
    return DatasetConfig.model_validate_json(text)


def dataset_names() -> list[str]:
    """Names accepted by `load_problems` besides a file path: collections first, then datasets."""
    config = dataset_config()
    return [*config.collections, *config.datasets]


def list_datasets() -> list[DatasetInfo]:
    """Every shipped dataset and collection with its number of problems."""
    config = dataset_config()
    infos = []
    for name in dataset_names():
        members = config.collections[name].includes if name in config.collections else [name]
        description = (config.collections.get(name) or config.datasets[name]).description
        infos.append(
            DatasetInfo(
                name=name,
                count=len(load_problems(name)),
                domains=sorted({config.datasets[m].domain for m in members}),
                files=[config.datasets[m].file for m in members],
                description=description,
            )
        )
    return infos


def load_problems(
    dataset: str | Path = "full",
    max_problems: int | None = None,
    start_problem: int = 1,
    *,
    split: Literal["train", "test"] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> list[Problem]:
    """Load a shipped dataset by name ('full', 'aime2024', 'aime2025', 'physics') or a user's file.

    Args:
        dataset: A shipped name or the path of a `.jsonl` / `.json` file.
        max_problems: Keep at most this many problems, counted from `start_problem`.
        start_problem: 1-based position of the first problem to keep.
        split: Keep one part of the seeded train/test split of the whole dataset (`split_problems`). It is
            taken before `start_problem` and `max_problems`, so a shortened train run never holds a
            problem of the test part that `eval` sees.
        test_fraction: The test part's share, with `split`.
        split_seed: The split's seed, with `split`.

    Raises:
        DatasetError: Unknown name, unreadable or malformed file, a start past the end, or a split that
            leaves a part empty.
    """
    if start_problem < 1:
        raise DatasetError(f"start_problem must be 1 or more, got {start_problem}")
    if max_problems is not None and max_problems < 0:
        raise DatasetError(f"max_problems must be 0 or more, got {max_problems}")
    problems = _load_all(dataset)
    if split is not None:
        train, test = split_problems(problems, test_fraction, split_seed)
        problems = test if split == "test" else train
    if start_problem > len(problems):
        where = f"the {split} part of {dataset}" if split else str(dataset)
        raise DatasetError(f"start_problem {start_problem} is past the end of {where} ({len(problems)} problems)")
    selected = problems[start_problem - 1 :]
    return selected if max_problems is None else selected[:max_problems]


def split_problems(problems: list[Problem], test_fraction: float, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Split problems into (train, test) by a seeded hash of each id, each part in the input's order.

    The problems are ranked by sha256 of `<seed>:<id>` and the first round(n * test_fraction) form the
    test part, so a split depends on the seed and the ids only, never on the input order or on Python's
    hash seed: `train` and `eval` given the same seed and fraction agree on it.

    Raises:
        DatasetError: The fraction is not strictly between 0 and 1, or a part would be empty.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    size = round(len(problems) * test_fraction)
    if not 0 < size < len(problems):
        raise DatasetError(f"a test fraction of {test_fraction} leaves an empty part of {len(problems)} problem(s)")
    ranked = sorted(problems, key=lambda p: hashlib.sha256(f"{seed}:{p.id}".encode()).hexdigest())
    test_ids = {p.id for p in ranked[:size]}
    return [p for p in problems if p.id not in test_ids], [p for p in problems if p.id in test_ids]


def _load_all(dataset: str | Path) -> list[Problem]:
    config = dataset_config()
    name = str(dataset)
    if not isinstance(dataset, Path) and name in config.collections:
        return [p.model_copy() for member in config.collections[name].includes for p in _load_shipped(member)]
    if not isinstance(dataset, Path) and name in config.datasets:
        # Copies, so that a caller editing a problem never alters the cached dataset.
        return [p.model_copy() for p in _load_shipped(name)]
    path = Path(dataset)
    if not path.is_file():
        valid = ", ".join(dataset_names())
        raise DatasetError(f"unknown dataset {name!r}: not one of {valid}, and no such file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DatasetError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _parse_file(data, path)


@cache
def _load_shipped(name: str) -> tuple[Problem, ...]:
    spec = dataset_config().datasets[name]
    data = resources.files("causal_grpo").joinpath("data", spec.file).read_bytes()
    return tuple(_parse_bytes(data, label=spec.file, dataset=name, fmt=spec.format, domain=spec.domain))


def _parse_file(data: bytes, path: Path) -> list[Problem]:
    suffix = path.suffix.lower()
    fmt: Format
    if suffix in (".jsonl", ".json"):
        fmt = "jsonl" if suffix == ".jsonl" else "json"
    else:
        # Unknown extension: an array opens with '[', anything else is read as JSONL.
        fmt = "json" if data.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"[" else "jsonl"
    return _parse_bytes(data, label=str(path), dataset=path.stem, fmt=fmt, domain=None)


def _parse_bytes(data: bytes, *, label: str, dataset: str, fmt: Format, domain: Domain | None) -> list[Problem]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(f"{label}: line {line}: not valid UTF-8 (byte {column} of the line)") from None
    if not text.strip():
        raise DatasetError(f"{label}: the file is empty")
    records = _jsonl_records(text, label) if fmt == "jsonl" else _json_records(text, label)
    problems: list[Problem] = []
    where_of: dict[str, str] = {}
    for position, (where, record) in enumerate(records, start=1):
        problem = _to_problem(record, f"{label}: {where}", dataset=dataset, position=position, domain=domain)
        if problem.id in where_of:
            raise DatasetError(f"{label}: {where}: duplicate id {problem.id!r} (first at {where_of[problem.id]})")
        where_of[problem.id] = where
        problems.append(problem)
    if not problems:
        raise DatasetError(f"{label}: contains no problems")
    return problems


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=_RawNumber, parse_int=_RawNumber)


def _jsonl_records(text: str, label: str) -> Iterator[tuple[str, Any]]:
    # Split on '\n' only: JSON strings may hold raw U+2028 and similar, which splitlines() would cut.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", _loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{label}: line {number}: invalid JSON ({e.msg} at column {e.colno})") from None


def _json_records(text: str, label: str) -> Iterator[tuple[str, Any]]:
    try:
        data = _loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{label}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{label}: expected a JSON array of problem objects, got {_type_name(data)}")
    for index, item in enumerate(data):
        yield f"item [{index}]", item


class _Record(BaseModel):
    """A problem object as written in a file, after the type checks."""

    id: str | None = Field(default=None, min_length=1)
    text: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    unit: str | None = None
    domain: Domain | None = None
    topic: str | None = None


_STRING_FIELDS = ("id", "text", "unit", "domain", "topic")


def _to_problem(record: Any, where: str, *, dataset: str, position: int, domain: Domain | None) -> Problem:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a problem object, got {_type_name(record)}")
    for key in ("text", "answer"):
        if key not in record:
            raise DatasetError(f"{where}: missing {key!r}")
    for key in _STRING_FIELDS:
        value = record.get(key)
        if value is not None and (not isinstance(value, str) or isinstance(value, _RawNumber)):
            raise DatasetError(f"{where}: {key!r} must be a string, got {_type_name(value)}")
    answer = record["answer"]
    if not isinstance(answer, str):
        raise DatasetError(f"{where}: 'answer' must be a string or a number, got {_type_name(answer)}")
    for key, limit in (("text", MAX_TEXT_CHARS), ("answer", MAX_ANSWER_CHARS)):
        if len(record[key]) > limit:
            raise DatasetError(f"{where}: {key!r} is {len(record[key]):,} characters long; the limit is {limit:,}")
    try:
        parsed = _Record.model_validate({k: record.get(k) for k in _Record.model_fields if k in record})
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise DatasetError(f"{where}: {field!r}: {first['msg']}") from None
    if domain is None:
        domain = parsed.domain or ("physics" if parsed.unit is not None else "math")
    return Problem(
        id=parsed.id or f"{dataset}_{position:03d}",
        text=parsed.text,
        answer=str(parsed.answer).strip(),
        unit=parsed.unit,
        dataset=dataset,
        domain=domain,
        topic=parsed.topic,
    )


def _type_name(value: Any) -> str:
    if isinstance(value, _RawNumber):
        return "a number"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
