"""Tasks from TFDS: the catalog (GLUE, SQuAD, CoNLL-2003) with each GLUE task's features and
metrics, label sets from the dataset info, and TFDS examples -> `_Row` / `_Question` /
`_Sentence`."""

from __future__ import annotations

from collections.abc import Iterator

from bert_jax.data.finetuning.examples import _check_ids, _nonempty, _Question, _Row, _Sentence, _Source
from bert_jax.data.finetuning.settings import _Settings
from bert_jax.errors import UserError

# GLUE in TFDS: text features, metrics (main first... see `main`), main metric.
_GLUE = {
    "cola": (("sentence",), ("mcc",), "mcc"),
    "sst2": (("sentence",), ("accuracy",), "accuracy"),
    # GLUE reports accuracy and F1 of the positive class (equivalent / duplicate); F1 is main.
    "mrpc": (("sentence1", "sentence2"), ("accuracy", "f1"), "f1"),
    "qqp": (("question1", "question2"), ("accuracy", "f1"), "f1"),
    "stsb": (("sentence1", "sentence2"), ("pearson", "spearman"), "pearson"),
    "mnli": (("premise", "hypothesis"), ("accuracy",), "accuracy"),
    "qnli": (("question", "sentence"), ("accuracy",), "accuracy"),
    "rte": (("sentence1", "sentence2"), ("accuracy",), "accuracy"),
    "wnli": (("sentence1", "sentence2"), ("accuracy",), "accuracy"),
    "ax": (("premise", "hypothesis"), ("accuracy",), "accuracy"),
}
TFDS_NAMES = (*(f"glue/{t}" for t in _GLUE), "squad/v1.1", "squad/v2.0", "conll2003")


def _tfds_source(s: _Settings) -> _Source:
    if s.name not in TFDS_NAMES:
        raise UserError(
            f"task.name={s.name!r} is not a TFDS task; choose one of: {', '.join(TFDS_NAMES)} "
            f"(or task.source=files for your own data)"
        )
    kind = (
        "regression"
        if s.name == "glue/stsb"
        else "classification"
        if s.name.startswith("glue/")
        else "span"
        if s.name.startswith("squad/")
        else "token_classification"
    )
    if s.kind and s.kind != kind:
        raise UserError(
            f"task.kind={s.kind!r} does not fit {s.name}, which is a {kind} task; leave task.kind empty"
        )
    data_dir = s.tfds_data_dir or None
    if s.name.startswith("glue/"):
        task = s.name.split("/")[1]
        text_features, _, _ = _GLUE[task]
        text_features = s.text_columns or text_features
        label_names = _tfds_label_names(
            "glue/mnli" if task == "ax" else s.name, s.label_column, data_dir, kind
        )
        if s.labels and s.labels != label_names:
            raise UserError(
                f"task.labels={','.join(s.labels)!r} differs from {s.name}'s labels "
                f"{','.join(label_names)!r}; leave task.labels empty for TFDS"
            )

        def dataset(split):
            if task != "ax":
                return s.name
            return "glue/ax" if split == "test" else "glue/mnli"  # AX trains and is scored on MNLI

        def read(split):
            name = dataset(split)
            rows = []
            for i, ex in enumerate(_tfds_examples(name, split, data_dir, s.max_examples)):
                idx = int(ex["idx"]) if "idx" in ex else i
                where = f"{name} split {split} idx {idx}"
                texts = tuple(_feature_text(ex, f, where) for f in text_features)
                raw = ex.get(s.label_column)
                if raw is None:
                    raise UserError(
                        f"{where}: no feature {s.label_column!r} (task.label_column); "
                        f"features: {', '.join(ex)}"
                    )
                if kind == "regression":
                    label = float(raw)
                    label = None if label < 0 else label  # TFDS writes -1 on the unlabelled test split
                else:
                    label = None if int(raw) < 0 else _tfds_class(label_names, int(raw), where)
                rows.append(_Row(str(idx), texts, label, where))
            return _nonempty(rows, f"{name} split {split}")

        mnli = task in ("mnli", "ax")
        mnli_eval = ("validation_matched", "validation_mismatched")
        return _Source(
            kind,
            label_names,
            "train",
            read,
            default_eval=mnli_eval if mnli else ("validation",),
            default_predict={"mnli": ("test_matched", "test_mismatched"), "ax": ("test",)}.get(
                task, ("test",)
            ),
            glue=task,
        )
    if kind == "span":

        def read(split):
            out = []
            for i, ex in enumerate(_tfds_examples(s.name, split, data_dir, s.max_examples)):
                where = f"{s.name} split {split} example {i}"
                qid = _feature_text(ex, "id", where)
                answers = ex["answers"]
                texts = [_decode(t, where) for t in answers["text"]]
                starts = [int(a) for a in answers["answer_start"]]
                impossible = bool(ex.get("is_impossible", False))
                pairs = () if impossible else tuple(zip(texts, starts, strict=True))
                out.append(
                    _Question(
                        qid,
                        _feature_text(ex, "question", where),
                        _feature_text(ex, "context", where),
                        pairs,
                        True,
                        f"{where} (id {qid})",
                    )
                )
            return _check_ids(_nonempty(out, f"{s.name} split {split}"))

        return _Source(
            kind, (), "train", read, default_eval=("validation",), version_2=s.name == "squad/v2.0"
        )

    label_names = _tfds_label_names(s.name, "ner", data_dir, kind)

    def read(split):
        tfds_split = "dev" if split == "validation" else split  # conll2003's TFDS name
        out = []
        for i, ex in enumerate(_tfds_examples(s.name, tfds_split, data_dir, s.max_examples)):
            where = f"{s.name} split {tfds_split} example {i}"
            words = tuple(_decode(w, where) for w in ex["tokens"])
            tags = tuple(_tfds_class(label_names, int(t), where) for t in ex["ner"])
            if len(tags) != len(words):
                raise UserError(f"{where}: {len(words)} tokens but {len(tags)} ner tags")
            out.append(_Sentence(words, tags, where))
        return _nonempty(out, f"{s.name} split {tfds_split}")

    return _Source(kind, label_names, "train", read, default_eval=("validation", "test"))


def _tfds_label_names(name: str, feature: str, data_dir, kind: str) -> tuple[str, ...]:
    if kind == "regression":
        return ()
    tfds = import_tfds()

    try:
        features = tfds.builder(name, data_dir=data_dir).info.features
    except Exception as e:  # tfds raises many types for a missing dataset
        raise UserError(f"tfds dataset {name!r}: {e}") from None
    if feature not in features:
        raise UserError(f"{name} has no feature {feature!r}; features: {', '.join(features)}")
    names = features[feature]
    names = getattr(names, "feature", names)  # conll's ner is a Sequence of ClassLabel
    return tuple(names.names)


def import_tfds():
    """tensorflow_datasets, with TensorFlow started quietly first (bert_jax/tf_setup.py): only
    a TFDS task imports TensorFlow."""
    from bert_jax import tf_setup

    tf_setup.start()
    import tensorflow_datasets as tfds

    return tfds


def _tfds_examples(name: str, split: str, data_dir, max_examples: int) -> Iterator[dict]:
    tfds = import_tfds()

    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    except Exception as e:  # unknown split, missing data, download failure...
        raise UserError(f"tfds {name!r} split {split!r}: {e}") from None
    if max_examples:
        ds = ds.take(max_examples)
    return iter(tfds.as_numpy(ds))


def _tfds_class(names: tuple[str, ...], value: int, where: str) -> str:
    if not 0 <= value < len(names):
        raise UserError(f"{where}: label {value} is outside the label set {', '.join(names)}")
    return names[value]


def _decode(value, where: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{where}: text is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return str(value)


def _feature_text(ex: dict, feature: str, where: str) -> str:
    if feature not in ex:
        raise UserError(f"{where}: no feature {feature!r}; features: {', '.join(ex)}")
    return _decode(ex[feature], where)
