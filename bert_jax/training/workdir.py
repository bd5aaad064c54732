"""What a workdir holds: one record, written by the trainers and `bert-jax import`, read by
every command through `open(path)`.

Each checkpoint's JSON item (beside its arrays) is a `Record` plus what its writer adds:

    kind     "pretraining" | "imported" (`bert-jax import`) | "finetuned"
    model    the architecture and outputs. Pretraining: objective, encoder, generator_fraction
             (and imported: true once it continued an import); the heads follow from the
             objective. Imported / fine-tuned: encoder, heads, num_labels, label_names.
    config   the run's config (pretraining, fine-tuning)
    + pretraining: data_state; fine-tuning: task, seed, metrics, init; import: source, format

The tokenizer is in WORKDIR/tokenizer (import, fine-tuning), or where the prepared data's
metadata.json says it is (pretraining).

    ckpt = workdir.open(path)   # WORKDIR, WORKDIR/STEP, WORKDIR/checkpoints/STEP, a fine-tuning
                                # WORKDIR (its best seed), a Hugging Face directory, a TF1 checkpoint
    ckpt.record.encoder, .heads, .num_labels, .label_names, .objective
    ckpt.params()               # the parameters, on this process's first device
    ckpt.encoder_params()       # the encoder's (ELECTRA: the discriminator's)
    ckpt.tokenizer_files        # {file name: path}
    ckpt.tokenizer()
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile

from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.models.config import EncoderConfig

PRETRAINING, IMPORTED, FINETUNED = "pretraining", "imported", "finetuned"
TOKENIZER = "tokenizer"  # WORKDIR/tokenizer: the tokenizer files of an import or a fine-tuning run
RESULTS = "results.json"  # a fine-tuning WORKDIR's summary, naming its best seed
SOURCES = ("ours", "hf", "tf1")  # what `open` may read


@dataclasses.dataclass(frozen=True)
class Record:
    """What a checkpoint holds: its kind, architecture and outputs, and the run's config."""

    kind: str
    encoder: EncoderConfig
    heads: tuple[str, ...] = ()  # of the model at the objective's MODEL path
    num_labels: int = 2
    label_names: tuple[str, ...] = ()
    objective: str = ""  # the pretraining objective; "" where the checkpoint holds parameters only
    generator_fraction: float = 0.25  # ELECTRA's generator width
    from_import: bool = False  # pretraining that continued a `bert-jax import`
    config: dict | None = None

    @classmethod
    def pretraining(cls, config, enc: EncoderConfig, from_import: bool = False) -> Record:
        from bert_jax.objectives import OBJECTIVES

        return cls(
            PRETRAINING,
            enc,
            heads=tuple(OBJECTIVES[config.objective].HEADS),
            objective=config.objective,
            generator_fraction=config.electra.generator_fraction,
            from_import=from_import,
            config=config.to_dict(),
        )

    def model(self) -> dict:
        """The "model" entry: what a resumed run must match."""
        if self.kind == PRETRAINING:
            out = {
                "objective": self.objective,
                "encoder": self.encoder.architecture(),
                "generator_fraction": self.generator_fraction,
            }
            return {**out, "imported": True} if self.from_import else out
        return {
            "encoder": self.encoder.to_dict() if self.kind == IMPORTED else self.encoder.architecture(),
            "heads": list(self.heads),
            "num_labels": self.num_labels,
            "label_names": list(self.label_names),
        }

    def to_json(self, **written_by) -> dict:
        """The checkpoint's JSON item: this record and what its writer adds."""
        out = {"kind": self.kind, "model": self.model(), **written_by}
        if self.config is not None:
            out["config"] = self.config
        return out

    @classmethod
    def from_json(cls, item: dict, where: str) -> Record:
        model = item.get("model")
        kind = item.get("kind", PRETRAINING)  # pretraining checkpoints before 2026-12 have no kind
        if kind not in (PRETRAINING, IMPORTED, FINETUNED) or not isinstance(model, dict):
            raise UserError(f"{where}: not a checkpoint this bert_jax reads (kind {kind!r}, model {model!r})")
        enc = EncoderConfig.from_dict(model["encoder"])
        if kind == PRETRAINING:
            from bert_jax.objectives import OBJECTIVES

            objective = model.get("objective", "")
            return cls(
                kind,
                enc,
                heads=tuple(getattr(OBJECTIVES.get(objective), "HEADS", ())),
                objective=objective,
                generator_fraction=model.get("generator_fraction", 0.25),
                from_import=bool(model.get("imported")),
                config=item.get("config"),
            )
        return cls(
            kind,
            enc,
            heads=tuple(model["heads"]),
            num_labels=model["num_labels"],
            label_names=tuple(model.get("label_names") or ()),
            config=item.get("config"),
        )


@dataclasses.dataclass
class Checkpoint:
    """One opened checkpoint: ours (parameters restored on demand), or a Hugging Face / TF1 one."""

    path: str  # the workdir (a fine-tuning WORKDIR's best seed), or the foreign checkpoint
    step: int | None  # None: not one of ours
    record: Record
    tokenizer_files: dict[str, str]  # the name transformers expects -> path
    source: str  # for logs and results
    item: dict  # the whole JSON item ({} for foreign checkpoints)
    tokenizer_path: str = ""  # what `load_tokenizer` reads (a directory or one file), if one does
    _params: dict | None = None

    def params(self) -> dict:
        """The parameters as a pure dict (ELECTRA pretraining: generator and discriminator)."""
        if self._params is None:
            self._params = _restore_params(self)
        return self._params

    def model_params(self) -> dict:
        """The parameters of the BERT model with `record.heads` (ELECTRA: the discriminator)."""
        params = self.params()
        if self.record.kind == PRETRAINING:
            from bert_jax.objectives import OBJECTIVES

            for key in OBJECTIVES[self.record.objective].MODEL:
                params = params[key]
        return params

    def encoder_params(self) -> dict:
        return self.model_params()["encoder"]

    def tokenizer(self):
        from bert_jax.data.tokenizers import load_tokenizer

        if self.tokenizer_path:
            return load_tokenizer(self.tokenizer_path)
        if not self.tokenizer_files:
            raise UserError(f"{self.source}: no tokenizer files found beside the checkpoint")
        with tempfile.TemporaryDirectory(prefix="bert_jax-tokenizer-") as directory:
            return load_tokenizer(copy_tokenizer(self.tokenizer_files, directory))


def open(path: str, step: int | None = None, sources: tuple[str, ...] = SOURCES) -> Checkpoint:  # noqa: A001
    """The checkpoint at `path` (see the module docstring), read as one of `sources`."""
    path, named_step = parse_checkpoint(path)
    step = named_step if step is None else step
    path = best_seed_dir(path)
    if storage.isdir(storage.join(path, "checkpoints")):
        return _open_ours(path, step)
    if step is not None or sources == ("ours",):
        raise UserError(f"{path}: no checkpoints directory; expected one of our workdirs")
    from bert_jax.convert import hf

    if "tf1" in sources and not storage.isfile(storage.join(path, "config.json")):
        from bert_jax.convert import tf1

        foreign, source = tf1.load_tf1(storage.fetch(path)), f"{path} (TF1)"
    else:
        foreign, source = hf.load(storage.fetch(path)), f"{path} (Hugging Face)"
    record = Record(
        IMPORTED,
        foreign.config,
        heads=tuple(foreign.heads),
        num_labels=foreign.num_labels,
        label_names=tuple(foreign.label_names or ()),
    )
    files = dict(foreign.tokenizer_files)
    return Checkpoint(path, None, record, files, source, {}, _params=foreign.params)


def read_record(item: dict, where: str) -> Record:
    return Record.from_json(item, where)


def parse_checkpoint(path: str) -> tuple[str, int | None]:
    """WORKDIR, WORKDIR/STEP or WORKDIR/checkpoints/STEP -> (workdir, step or None)."""
    path = path.rstrip("/") or path
    head, tail = os.path.split(path)
    if re.fullmatch(r"\d+", tail):
        workdir = os.path.dirname(head) if os.path.basename(head) == "checkpoints" else head
        return workdir, int(tail)
    return path, None


def best_seed_dir(path: str) -> str:
    """A fine-tuning WORKDIR -> WORKDIR/seed_<best>; any other path as it is."""
    results = storage.join(path, RESULTS)
    if not storage.isfile(results):
        return path
    try:
        best = storage.read_json(results)["best_checkpoint"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{results}: no readable best_checkpoint ({type(e).__name__}: {e})") from None
    return storage.inside(path, best, f"{results}'s best_checkpoint")


def copy_tokenizer(files: dict[str, str], directory: str) -> str:
    """The tokenizer files into `directory` (WORKDIR/tokenizer of an import or fine-tuning)."""
    storage.makedirs(directory)
    for name, src in files.items():
        storage.copy(src, storage.join(directory, name))
    return directory


def _open_ours(path: str, step: int | None) -> Checkpoint:
    from bert_jax.training import checkpointing

    ckpt = checkpointing.Checkpointer(path, async_save=False, read_only=True)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{path} holds no checkpoint")
        item = ckpt.read_extra(step)
    finally:
        ckpt.close()
    record = read_record(item, f"{path} (step {step})")
    tokenizer = _tokenizer_path(path, record)
    return Checkpoint(
        path,
        step,
        record,
        _files_of(tokenizer) if tokenizer else {},
        f"{path} (step {step}, {record.objective or record.kind})",
        item,
        tokenizer,
    )


def _tokenizer_path(path: str, record: Record) -> str:
    """Pretraining: the tokenizer the data was prepared with (WORKDIR/tokenizer if that data is
    gone); import and fine-tuning: WORKDIR/tokenizer. "" when there is none."""
    from bert_jax.data import records

    candidates = [storage.join(path, TOKENIZER)]
    if record.kind == PRETRAINING:
        data_dir = ((record.config or {}).get("data") or {}).get("dir") or storage.join(path, "data")
        meta_path = storage.join(data_dir, records.METADATA)
        if storage.isfile(meta_path):
            candidates.insert(0, storage.read_json(meta_path)["tokenizer"])
    return next((c for c in candidates if storage.isdir(c) or storage.isfile(c)), "")


def _files_of(tokenizer: str) -> dict[str, str]:
    """The files of a tokenizer directory or file, under the names transformers expects."""
    if storage.isfile(tokenizer):
        directory, _, name = tokenizer.rpartition("/")
        files = {_CANONICAL.get(os.path.splitext(name)[1], name): tokenizer}
        beside = [
            n for n in ("merges.txt", "tokenizer_config.json") if storage.isfile(storage.join(directory, n))
        ]
        return {**files, **{n: storage.join(directory, n) for n in beside}}
    names = [n for n in storage.listdir(tokenizer) if storage.isfile(storage.join(tokenizer, n))]
    models = [n for n in names if n.endswith(".model")]
    files = {n: storage.join(tokenizer, n) for n in names if not n.endswith(".model")}
    if len(models) == 1 or "spiece.model" in models:  # load_tokenizer's choice, under HF's name
        files["spiece.model"] = storage.join(
            tokenizer, "spiece.model" if "spiece.model" in models else models[0]
        )
    return files


_CANONICAL = {".model": "spiece.model", ".txt": "vocab.txt"}


def _restore_params(ckpt: Checkpoint) -> dict:
    import jax

    from bert_jax import config_files
    from bert_jax.training import checkpointing, sharding, state

    record = ckpt.record
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.local_devices()[:1])
    if record.kind == PRETRAINING:
        config = config_files.from_dict(record.config)
        target = state.StateSetup.for_pretraining(config, record.encoder, mesh).target()
    else:  # import and fine-tuning save parameters only
        target = state.params_target(record.encoder, record.heads, record.num_labels, mesh)
    reader = checkpointing.Checkpointer(ckpt.path, async_save=False, read_only=True)
    try:
        return reader.restore(ckpt.step, target)[0]["params"]
    finally:
        reader.close()
