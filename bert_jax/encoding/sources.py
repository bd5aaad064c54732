"""What `bert-jax encode` reads: the input's texts, one record at a time, with where each came from.

An input is one of (by its name):
  tfds:NAME[/CONFIG][:SPLIT]   a TensorFlow Datasets split; `field` names the text feature
  *.jsonl                      one JSON object a line; `field` names the text (default "text")
  *.csv / *.tsv                a header row, then rows; `field` names the column (default "text")
  anything else                UTF-8 text, one text a line

Records are read as a stream (never the whole file at once) from local or gs:// paths. A bad
record (not UTF-8, invalid JSON, a missing, non-text or empty field) is either an error naming
the file and line (`on_bad="error"`, the default) or passed on as a `Record` without text and
with the problem (`on_bad="skip"`), which the caller reports. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator

from bert_jax import storage
from bert_jax.errors import UserError

ON_BAD = ("error", "skip")


@dataclasses.dataclass(frozen=True)
class Record:
    number: int  # 1-based: the line of a file (a CSV record's first line), or a TFDS example's
    text: str | None  # None: a bad record, skipped
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class Input:
    path: str
    field: str = ""  # JSONL key, CSV/TSV column or TFDS feature
    on_bad: str = "error"

    def __post_init__(self):
        if self.on_bad not in ON_BAD:
            raise UserError(f"--on-bad-line={self.on_bad!r}; choose one of: {', '.join(ON_BAD)}")
        if self.kind == "text" and self.field:
            raise UserError(
                f"--field={self.field!r} applies to JSONL, CSV, TSV and tfds: inputs, not {self.path}"
            )
        if self.kind == "tfds" and not self.field:
            raise UserError(f"{self.path}: name the text feature with --field")

    @property
    def kind(self) -> str:
        if self.path.startswith("tfds:"):
            return "tfds"
        lower = self.path.lower()
        for ext in ("jsonl", "csv", "tsv"):
            if lower.endswith("." + ext):
                return ext
        return "text"

    def where(self, number: int) -> str:
        return f"{self.path} example {number}" if self.kind == "tfds" else f"{self.path}:{number}"

    def check(self) -> None:
        """Fail early (before a model loads) on an input that does not exist."""
        if self.kind == "tfds":
            return
        if storage.isdir(self.path):
            raise UserError(f"input {self.path} is a directory, expected a file")
        if not storage.exists(self.path):
            raise UserError(f"input file {self.path} does not exist")

    def records(self) -> Iterator[Record]:
        """Every record in order, good ones with their text; raises UserError at a bad one
        unless on_bad == "skip"."""
        reader = {"tfds": _tfds, "jsonl": _jsonl, "csv": _table, "tsv": _table, "text": _text}[self.kind]
        any_record = False
        for number, text, problem in reader(self):
            any_record = True
            if problem == "" and not text.strip():
                problem = "empty text" if self.kind == "text" else f"field {self.field or 'text'!r} is empty"
            if problem:
                if self.on_bad == "error":
                    raise UserError(f"{self.where(number)}: {problem} (--on-bad-line skip skips such lines)")
                yield Record(number, None, problem)
            else:
                yield Record(number, text)
        if not any_record:
            raise UserError(f"input {self.path} is empty; expected one text per line")

    def count(self) -> int | None:
        """How many records there are, when that is cheap to know (local text/JSONL files and
        TFDS splits); None otherwise. Only for progress: never trusted for correctness."""
        if self.kind == "tfds":
            try:
                builder, split = _tfds_builder(self)
                return int(builder.info.splits[split].num_examples)
            except Exception:  # noqa: BLE001 - a count is optional
                return None
        if storage.is_remote(self.path) or self.kind in ("csv", "tsv"):
            return None
        lines = 0
        last = b"\n"
        with storage.open(self.path, "rb") as f:
            while block := f.read(1 << 22):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n")


def _lines(inp: Input) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text without its line break or None, problem) of a UTF-8 file."""
    with storage.open(inp.path, "rb") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as e:
                yield number, None, f"line is not valid UTF-8 ({e.reason} at byte {e.start})"


def _text(inp: Input):
    yield from _lines(inp)


def _field_text(value, field: str, keys) -> tuple[str | None, str]:
    if value is _MISSING:
        return None, f"no field {field!r} (found: {', '.join(map(str, keys)) or 'none'})"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, f"field {field!r} is not valid UTF-8 ({e.reason} at byte {e.start})"
    if not isinstance(value, str):
        return None, f"field {field!r} must be a string, found {json.dumps(value, default=str)[:60]}"
    return value, ""


_MISSING = object()


def _jsonl(inp: Input):
    field = inp.field or "text"
    for number, line, problem in _lines(inp):
        if problem:
            yield number, None, problem
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, None, f"invalid JSON: {e.msg} (column {e.colno})"
            continue
        if not isinstance(obj, dict):
            yield number, None, f"expected a JSON object, found {type(obj).__name__}"
            continue
        yield number, *_field_text(obj.get(field, _MISSING), field, obj)


def _table(inp: Input):
    """CSV (quoted fields may span lines) or TSV (no quoting, as GLUE's files); a record's
    number is the line it starts on."""
    field = inp.field or "text"
    with storage.open(inp.path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        try:
            if inp.kind == "tsv":
                reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(text)
            header = None
            start = 1
            for fields in reader:
                number, start = start, reader.line_num + 1
                if header is None:
                    header = [f.strip().removeprefix("\ufeff") for f in fields]
                    if field not in header:
                        raise UserError(
                            f"{inp.path}: no column {field!r} (columns: {', '.join(header)}); "
                            "name the text column with --field"
                        )
                    at = header.index(field)
                    continue
                if len(fields) != len(header):
                    yield number, None, f"expected {len(header)} fields (as the header), found {len(fields)}"
                    continue
                yield number, fields[at], ""
        except UnicodeDecodeError as e:
            raise UserError(
                f"{inp.path}: near line {start}: not valid UTF-8 ({e.reason}); a CSV/TSV input "
                "must be UTF-8 throughout"
            ) from None
        except csv.Error as e:
            raise UserError(f"{inp.path}:{start}: {e}") from None
        finally:
            text.detach()


def _tfds_builder(inp: Input):
    from bert_jax.data.finetuning.tfds_source import import_tfds

    spec = inp.path.removeprefix("tfds:")
    name, _, split = spec.partition(":")
    tfds = import_tfds()
    try:
        return tfds.builder(name), split or "train"
    except Exception as e:  # tfds raises many types for a missing dataset
        raise UserError(f"{inp.path}: {e}") from None


def _tfds(inp: Input):
    from bert_jax.data.finetuning.tfds_source import import_tfds

    tfds = import_tfds()
    builder, split = _tfds_builder(inp)
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as e:  # unknown split, data not prepared...
        raise UserError(f"{inp.path}: split {split!r}: {e}") from None
    for number, example in enumerate(tfds.as_numpy(ds), 1):
        yield number, *_field_text(example.get(inp.field, _MISSING), inp.field, example)
