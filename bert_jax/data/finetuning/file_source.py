"""Tasks from the user's files: file and label-set checks, and the readers of CSV / TSV / JSONL
tables, SQuAD JSON / JSONL and CoNLL files, with UTF-8 and format errors at FILE:LINE."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator

from bert_jax import storage
from bert_jax.data.finetuning.examples import _check_ids, _nonempty, _Question, _Row, _Sentence, _Source
from bert_jax.data.finetuning.settings import KINDS, _Settings
from bert_jax.errors import UserError

# File formats each kind reads, by extension.
_FORMATS = {
    "classification": (".csv", ".tsv", ".jsonl"),
    "regression": (".csv", ".tsv", ".jsonl"),
    "span": (".json", ".jsonl"),
    "token_classification": (".conll", ".txt", ".tsv"),
}


def _files_source(s: _Settings) -> _Source:
    if not s.kind:
        raise UserError(f"task.kind is required for source=files; choose one of: {', '.join(KINDS)}")
    if not s.files:
        raise UserError("task.files sets no split file; set task.files.train / validation / test")
    for split, path in s.files.items():
        if not storage.isfile(path):
            raise UserError(f"task.files.{split}={path!r}: no such file")
        ext = os.path.splitext(path)[1].lower()
        if ext not in _FORMATS[s.kind]:
            raise UserError(
                f"task.files.{split}={path!r}: a {s.kind} task reads "
                f"{', '.join(_FORMATS[s.kind])} files, not {ext or 'no extension'!r}"
            )

    def path_of(split):
        if split not in s.files:
            raise UserError(f"split {split!r} has no file; task.files sets: {', '.join(s.files)}")
        return s.files[split]

    def cut(rows):
        return rows[: s.max_examples] if s.max_examples else rows

    if s.kind in ("classification", "regression"):

        def read(split):
            return cut(_read_table(path_of(split), s, s.kind == "regression"))
    elif s.kind == "span":

        def read(split):
            return _check_ids(cut(_read_squad(path_of(split))))
    else:

        def read(split):
            return cut(_read_conll(path_of(split)))

    source = _Source(s.kind, (), "train" if "train" in s.files else "", read, files=s.files)
    for split in s.files:  # every file is checked now, not after an epoch of training
        source.read(split)
    if s.kind == "span":
        source.version_2 = s.name == "squad/v2.0" or any(
            q.label and not q.answers for split in s.files for q in source.read(split)
        )
    elif s.kind != "regression":
        source.label_names = s.labels or _labels_from_train(source, s)
        for split in s.files:
            _check_labels(source.read(split), source.label_names, s.kind)
    return source


def _labels_from_train(source: _Source, s: _Settings) -> tuple[str, ...]:
    if "train" not in s.files:
        raise UserError(
            "task.labels is empty and task.files.train is not set: set task.labels to the "
            "label set in order (comma-separated), as the model was trained with"
        )
    examples = source.read("train")
    if s.kind == "classification":
        labels = {e.label for e in examples if e.label is not None}
        if not labels:
            raise UserError(
                f"{s.files['train']}: no labels (column {s.label_column!r}); the train split must be labelled"
            )
        if all(re.fullmatch(r"-?\d+", x) for x in labels):
            return tuple(sorted(labels, key=int))
        return tuple(sorted(labels))
    tags = {t for e in examples for t in (e.label or ())}
    if not tags:
        raise UserError(f"{s.files['train']}: no tags (a single column); the train split must be labelled")
    return ("O", *sorted(tags - {"O"}))


def _check_labels(examples: list, names: tuple[str, ...], kind: str) -> None:
    known = set(names)
    for e in examples:
        if e.label is None:
            continue
        if kind == "classification":
            if e.label not in known:
                raise UserError(f"{e.where}: label {e.label!r} is not in the label set: {', '.join(names)}")
            continue
        for w, tag in enumerate(e.label):
            if tag not in known:
                raise UserError(f"{e.where_of(w)}: tag {tag!r} is not in the label set: {', '.join(names)}")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text with its newline) of a UTF-8 file; UserError at a bad line."""
    with storage.open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)"
                ) from None
            yield n, (line.removeprefix("\ufeff") if n == 1 else line)


def _records(path: str) -> Iterator[tuple[int, dict]]:
    """(line, row as column -> value) of a CSV (header row), TSV (header row, no quoting, like
    GLUE's files) or JSONL (one object a line) file."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        for n, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{n}: expected a JSON object, found {type(obj).__name__}")
            yield n, obj
        return
    texts = (line for _, line in _lines(path))
    reader = csv.reader(texts, delimiter="\t", quoting=csv.QUOTE_NONE) if ext == ".tsv" else csv.reader(texts)
    header = None
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields (as the header: "
                    f"{', '.join(header)}), found {len(fields)}"
                )
            yield reader.line_num, dict(zip(header, fields, strict=True))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: {e}") from None
    if header is None:
        raise UserError(f"{path}: empty file (expected a header row and data rows)")


def _read_table(path: str, s: _Settings, regression: bool) -> list[_Row]:
    rows: list[_Row] = []
    columns = text_cols = id_col = None
    labelled = False
    for n, rec in _records(path):
        if columns is None:  # the header / the first object decides the columns
            columns = list(rec)
            text_cols = s.text_columns or (("text",) if "text" in rec else ("sentence1", "sentence2"))
            id_col = s.id_column or next((c for c in ("id", "idx") if c in rec), "")
            required = [*text_cols, *([id_col] if id_col else [])]
            missing = [c for c in required if c not in rec]
            if missing:
                raise UserError(
                    f"{path}: no column(s) {', '.join(map(repr, missing))}; columns found: "
                    f"{', '.join(columns)} (set task.text_columns / task.id_column)"
                )
            labelled = s.label_column in rec
        where = f"{path}:{n}"
        wanted = (*text_cols, *([id_col] if id_col else []), *([s.label_column] if labelled else []))
        missing = [c for c in wanted if c not in rec]
        if missing:
            raise UserError(
                f"{where}: no column(s) {', '.join(map(repr, missing))}; this row has: {', '.join(rec)}"
            )
        texts = tuple(_cell_text(rec[c], c, where) for c in text_cols)
        label = None
        if labelled:
            label = _cell_label(rec[s.label_column], s.label_column, where, regression)
        row_id = _cell_text(rec[id_col], id_col, where) if id_col else str(len(rows))
        rows.append(_Row(row_id, texts, label, where))
    return _nonempty(rows, path)


def _cell_text(value, column: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: column {column!r} must be a string, found {json.dumps(value)}")
    return str(value)


def _cell_label(value, column: str, where: str, regression: bool) -> str | float:
    if regression:
        try:
            if isinstance(value, bool):
                raise ValueError
            label = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: label {value!r} in column {column!r} is not a number") from None
        if not math.isfinite(label):
            raise UserError(f"{where}: label {value!r} in column {column!r} is not a finite number")
        return label
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (str, int, float)):
        raise UserError(
            f"{where}: label in column {column!r} must be a string or number, found {json.dumps(value)}"
        )
    label = str(value).strip()
    if not label:
        raise UserError(f"{where}: empty label in column {column!r}")
    return label


def _read_squad(path: str) -> list[_Question]:
    """Official SQuAD JSON ({"data": [{"paragraphs": [{"context", "qas": [...]}]}]}) or JSONL, one
    {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}} a line (HF
    datasets' layout). A question is unanswerable when it has no answers (or is_impossible);
    a file where no question has "answers" or "is_impossible" is unlabelled."""
    out = []
    if path.lower().endswith(".jsonl"):
        for n, obj in _records(path):
            where = f"{path}:{n}"
            fields = [_json_str(obj, k, where) for k in ("id", "question", "context")]
            answers = obj.get("answers")
            labelled = answers is not None or "is_impossible" in obj
            pairs = ()
            if answers is not None:
                if not (
                    isinstance(answers, dict)
                    and isinstance(answers.get("text"), list)
                    and isinstance(answers.get("answer_start"), list)
                    and len(answers["text"]) == len(answers["answer_start"])
                ):
                    raise UserError(
                        f'{where}: answers must be {{"text": [...], "answer_start": [...]}} '
                        f"with lists of equal length"
                    )
                pairs = tuple(
                    _answer(t, a, where)
                    for t, a in zip(answers["text"], answers["answer_start"], strict=True)
                )
            if obj.get("is_impossible"):
                pairs = ()
            out.append(_Question(*fields, pairs, True if labelled else None, where))
        return _nonempty(out, path)
    text = "\n".join(line.rstrip("\r\n") for _, line in _lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(
            f'{path}: expected SQuAD JSON: {{"data": [{{"paragraphs": [{{"context": ..., "qas": [...]}}]}}]}}'
        )
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise UserError(f"{path}: data[{a}] must be an object with a list 'paragraphs'")
        for p, para in enumerate(paragraphs):
            where_p = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise UserError(f"{where_p} must be an object with 'context' and a list 'qas'")
            context = _json_str(para, "context", where_p)
            for k, qa in enumerate(para["qas"]):
                where = f"{where_p}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise UserError(f"{where} must be an object")
                qid, question = _json_str(qa, "id", where), _json_str(qa, "question", where)
                answers = qa.get("answers")
                labelled = answers is not None or "is_impossible" in qa
                if answers is not None and not isinstance(answers, list):
                    raise UserError(f'{where}: answers must be a list of {{"text", "answer_start"}}')
                pairs = ()
                if answers and not qa.get("is_impossible"):
                    if not all(isinstance(ans, dict) for ans in answers):
                        raise UserError(f'{where}: answers must be a list of {{"text", "answer_start"}}')
                    pairs = tuple(_answer(ans.get("text"), ans.get("answer_start"), where) for ans in answers)
                out.append(
                    _Question(
                        qid, question, context, pairs, True if labelled else None, f"{where} (id {qid})"
                    )
                )
    return _nonempty(out, path)


def _json_str(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise UserError(
            f"{where}: {key!r} must be a string, found {json.dumps(value)}; keys: {', '.join(obj)}"
        )
    return value


def _answer(text, start, where: str) -> tuple[str, int]:
    if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
        raise UserError(
            f"{where}: an answer needs a string text and an integer answer_start, found "
            f"{json.dumps(text)} at {json.dumps(start)}"
        )
    return text, start


def _read_conll(path: str) -> list[_Sentence]:
    """CoNLL: whitespace-separated columns (tabs for .tsv), token first and IOB tag last, a blank
    line between sentences, -DOCSTART- lines skipped. One column: unlabelled tokens."""
    split = (lambda line: line.split("\t")) if path.lower().endswith(".tsv") else str.split
    sentences, words, tags, lines = [], [], [], []
    columns = None

    def close():
        if words:
            sentences.append(
                _Sentence(tuple(words), tuple(tags) if columns > 1 else None, lines[0], tuple(lines))
            )
            words.clear()
            tags.clear()
            lines.clear()

    for n, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            close()
            continue
        if line.startswith("-DOCSTART-"):
            close()
            continue
        fields = split(line)
        if columns is None:
            columns = len(fields)
        if len(fields) != columns:
            raise UserError(f"{path}:{n}: expected {columns} columns, found {len(fields)}")
        words.append(fields[0])
        tags.append(fields[-1])
        lines.append(f"{path}:{n}")
    close()
    return _nonempty(sentences, path)
