"""Every ConfigDict is built here: the config files, the sections they are made of, and saved configs.

A config file is `path.py[:arg]` -> get_config(arg) -> a locked ConfigDict. The shipped ones
(configs/) are a few lines each: their run commands, and get_config calling the builders below
(data_config, pretrain_config, finetune_config) plus their family's or task's own tweaks. Every
field of every config is defined, with its comment, in this module, except the task section's,
which come from bert_jax/data/finetuning/settings.py (DEFAULTS).

Overrides come as `--config.a.b=value` pairs; values are parsed as Python literals where
they can be (`3`, `0.1`, `True`, `['a', 'b']`) and kept as strings otherwise, then set
through ConfigDict's type checks, so a typo or a wrong type is an error naming the field.

Sections in the order a user meets them: loading a config file (and a saved one), the
config-file argument, prepare-data's config, pretraining's, fine-tuning's, and the sections
both trainers share (compute, optimizer, mesh, jax.distributed).
"""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections

from bert_jax.errors import UserError

# --- loading a config file, or a saved config -------------------------------------------------


def _where(error: Exception, path: str) -> str:
    """'FILE:LINE: ' of the innermost frame of `error` in the config file, if any."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}:{error.lineno}: "
    tb, line = error.__traceback__, None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}: " if line else ""


def load(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """`path.py[:arg]` with `--config.FIELD=VALUE` overrides -> a locked ConfigDict."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"--config={spec!r}: file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location("_bert_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a config file is user code: any error is theirs
        raise UserError(f"--config={spec!r}: {_where(e, path)}{type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise UserError(f"--config={spec!r}: {path} defines no get_config()")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except ValueError as e:  # get_config's own argument errors
        raise UserError(f"--config={spec!r}: {e}") from None
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(
            f"--config={spec!r}: get_config raised {_where(e, path)}{type(e).__name__}: {e}"
        ) from None
    return from_dict(config, overrides)


def from_dict(d, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """A locked ConfigDict of `d` (a ConfigDict, or a config saved as a dict in a workdir) with
    `--config.FIELD=VALUE` overrides applied."""
    config = ml_collections.ConfigDict(d)
    config.lock()
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise UserError(f"override {item!r}: expected --config.FIELD=VALUE")
        set_field(config, key.removeprefix("--").removeprefix("config."), raw)
    return config


def set_field(config: ml_collections.ConfigDict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for i, name in enumerate(parents):
        if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
            raise UserError(f"config has no section {'.'.join(parents[: i + 1])!r}")
        node = node[name]
    if leaf not in node:
        raise UserError(f"config has no field {dotted!r}; fields here: {', '.join(sorted(node))}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    current = node[leaf]
    if isinstance(current, str) and not isinstance(value, str):
        value = raw
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise UserError(f"--config.{dotted}={raw!r}: {e}") from None


def to_dict(config) -> dict:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


# --- the config-file argument ------------------------------------------------------------------


def parse_arg(arg: str, allowed: dict) -> dict:
    """'size=base,runlocal=1' -> {'size': 'base', 'runlocal': '1'} over the allowed keys."""
    values = dict(allowed)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in allowed:
            raise ValueError(f"config argument {key!r} is unknown; use one of: {', '.join(allowed)}")
        values[key] = value
    return values


# --- prepare-data (configs/data/pretraining.py; pretraining's data.prepare) ---------------------

# The example formats, each with the vocabulary trained when no tokenizer is given (the kind
# of the family that was pretrained on it) and whether that vocabulary is lowercased.
FORMATS = {
    "nsp": ("wordpiece", True),
    "sop": ("unigram", True),
    "full_sentences": ("byte_bpe", False),  # RoBERTa's byte-level BPE is cased
    "electra": ("wordpiece", True),
}
# The format each family was pretrained on.
FAMILY_FORMATS = {"bert": "nsp", "albert": "sop", "roberta": "full_sentences", "electra": "electra"}


def data_config(example_format: str = "nsp") -> ml_collections.ConfigDict:
    """Data preparation for an example format, or for a family (the format it was pretrained on)."""
    example_format = FAMILY_FORMATS.get(example_format, example_format)
    if example_format not in FORMATS:
        raise ValueError(
            f"configs/data/pretraining.py:{example_format}: choose an example format "
            f"({', '.join(FORMATS)}) or a family ({', '.join(FAMILY_FORMATS)})"
        )
    tokenizer_kind, lowercase = FORMATS[example_format]
    c = ml_collections.ConfigDict()
    c.corpus = ml_collections.ConfigDict()
    # Where text comes from: "default" (embedded, offline), "tfds" or "files".
    c.corpus.source = "default"
    # TFDS dataset name (with config/version), its split and the text feature to read.
    c.corpus.tfds_name = "wikipedia/20230601.en"
    c.corpus.split = "train"
    c.corpus.text_feature = "text"
    # TFDS data_dir ("" = TFDS's default, ~/tensorflow_datasets).
    c.corpus.tfds_data_dir = ""
    # Local files: comma-separated globs, and their format: "sentences" (one sentence a
    # line, blank line between documents, as google-research/bert) or "documents" (one a line).
    c.corpus.files = ""
    c.corpus.format = "sentences"
    # Longer lines are cut here (and counted), so one enormous line cannot exhaust memory.
    c.corpus.max_line_chars = 1_000_000
    # Tokenizer directory or file (vocab.txt, spiece.model, vocab.json + merges.txt).
    # Empty: train one on the corpus first, into OUTPUT/tokenizer, as below.
    c.tokenizer = ""
    c.train_tokenizer = ml_collections.ConfigDict()
    c.train_tokenizer.model_type = tokenizer_kind
    c.train_tokenizer.vocab_size = 8192
    c.train_tokenizer.lowercase = lowercase
    # nsp | sop | full_sentences | electra (see bert_jax/data/prepare.py).
    c.objective = example_format
    # Tokens per row, special tokens included.
    c.max_seq_length = 128
    # Probability that an example targets a random shorter length (BERT: 0.1).
    c.short_seq_prob = 0.1
    # Pack several short examples into one row (full_sentences / electra only).
    c.pack = False
    # Seed of every random choice of the preparation (not of the masking: that is online).
    c.seed = 12345
    # Documents per unit of work; NSP draws its random segments within a chunk.
    c.docs_per_chunk = 256
    # Rows per ArrayRecord shard.
    c.rows_per_shard = 100_000
    # Worker processes (0 = one per core). The output does not depend on it.
    c.num_workers = 0
    return c


# --- pretrain (configs/pretrain/<family>.py) ---------------------------------------------------


def pretrain_config(
    family: str, size: str, objective: str = "", example_format: str = ""
) -> ml_collections.ConfigDict:
    """The pretraining config of a family at a preset size (`{family}-{size}`), trained with
    `objective` on data of `example_format`: by default the family's own (bert, roberta,
    albert and electra name an objective and, through FAMILY_FORMATS, a format), so a new
    family's config file names the ones it reuses."""
    c = ml_collections.ConfigDict()
    # Which objective trains the model: bert (MLM+NSP), roberta (MLM), albert (MLM+SOP), electra.
    c.objective = objective or family

    c.model = ml_collections.ConfigDict()
    # A preset of bert_jax/models/config.py, e.g. bert-tiny, bert-base, roberta-large.
    c.model.preset = f"{family}-{size}"
    # Vocabulary size; 0 = the prepared data's vocabulary.
    c.model.vocab_size = 0
    c.model.update(compute_config())

    c.electra = ml_collections.ConfigDict()
    # Generator width as a fraction of the discriminator's (ELECTRA: 1/4 small, 1/3 base).
    c.electra.generator_fraction = 0.25
    # Weight of the discriminator's replaced-token loss (ELECTRA: 50).
    c.electra.rtd_weight = 50.0

    c.data = ml_collections.ConfigDict()
    # Prepared data (bert-jax prepare-data); "" = WORKDIR/data, prepared on the first run
    # from data.prepare (by default: the embedded corpus with a vocabulary trained on it).
    c.data.dir = ""
    c.data.prepare = data_config(example_format or family)
    # Rows held out of training for evaluation (the last rows of the prepared data).
    c.data.eval_rows = 256
    # With data.dir empty: True prepares WORKDIR/data again when its settings differ from
    # data.prepare (otherwise such a workdir is refused, naming the differing fields).
    c.data.reprepare = False

    c.masking = ml_collections.ConfigDict()
    # Fraction of tokens predicted, and of those: [MASK], random token (the rest kept).
    c.masking.rate = 0.15
    c.masking.mask_prob = 0.8
    c.masking.random_prob = 0.1
    # Masked positions per row (P): the MLM head runs only there.
    c.masking.max_predictions = 20
    # token, whole_word or span; span lengths: geometric (SpanBERT) or ngram (ALBERT).
    c.masking.strategy = "token"
    c.masking.span_distribution = "geometric"

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    # Rows per step over all hosts; must divide by the data x fsdp mesh size.
    c.train.global_batch_size = 32
    # Split each step into this many microbatches (gradient accumulation).
    c.train.microbatches = 1
    c.train.seed = 0
    # Print / log metrics every N steps (the only host syncs of the loop).
    c.train.log_every = 25
    c.train.eval_every = 200
    # Evaluation batches (of global_batch_size rows, fewer if eval_rows is smaller).
    c.train.eval_batches = 4
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 3
    # Stop with an error after this many consecutive non-finite steps (each is skipped).
    c.train.max_nonfinite_steps = 10
    # Peak FLOP/s for MFU; 0 = measure a matmul in model.dtype on these devices at start-up.
    c.train.peak_flops = 0.0

    c.optim = optim_config(learning_rate=1e-4, warmup_steps=100)
    c.mesh = mesh_config()
    c.distributed = distributed_config()
    return c


# --- finetune (configs/finetune/<task>.py) -----------------------------------------------------


def task_config(source: str, name: str, kind: str = "") -> ml_collections.ConfigDict:
    """The task section: the fields and defaults of bert_jax/data/finetuning/settings.py's
    DEFAULTS (each commented there), with the task's source, name and kind."""
    # Here rather than at the top: loading a pretraining config need not import the task
    # pipelines.
    from bert_jax.data.finetuning.settings import DEFAULTS

    t = ml_collections.ConfigDict({**DEFAULTS, "source": source, "name": name, "kind": kind})
    t.files = ml_collections.ConfigDict(dict(DEFAULTS["files"]))
    return t


def finetune_config(source: str, name: str, kind: str = "") -> ml_collections.ConfigDict:
    """The fine-tuning config of a task (task_config's arguments)."""
    c = ml_collections.ConfigDict()
    # The checkpoint to start from (--init on the command line wins): one of our pretraining
    # workdirs, a `bert-jax import` workdir, a Hugging Face checkpoint directory, or an
    # original TF1 checkpoint (prefix or directory). Its encoder is kept; the head is new.
    c.init = ""
    c.task = task_config(source, name, kind)
    # Fine-tune this many times with seeds train.seed, train.seed+1, ...; results report the
    # mean, std and median of every metric over them.
    c.seeds = 1

    # The pretraining config's compute section (compute_config below).
    c.model = compute_config()

    c.train = ml_collections.ConfigDict()
    # Passes over the training split; the last batch of an epoch is padded, not dropped.
    c.train.epochs = 3.0
    # Rows per step over all hosts; must divide by the data x fsdp mesh size.
    c.train.global_batch_size = 32
    # Rows per evaluation step (0 = global_batch_size).
    c.train.eval_batch_size = 0
    # Pack a step's examples into as few rows of task.max_seq_length as hold them (each keeps
    # its own attention, positions, [CLS] and labels; the step still takes global_batch_size
    # examples): classification, regression, token classification. Span QA and packing=False
    # cut each batch to the smallest of a few widths that holds its longest row instead.
    c.train.packing = True
    # At most this many examples share a packed row.
    c.train.pack_max_per_row = 16
    c.train.seed = 0
    c.train.log_every = 50
    # A step with a non-finite loss or gradient norm changes nothing (skipped); stop with an
    # error after this many in a row.
    c.train.max_nonfinite_steps = 10
    # Evaluate every N steps (0 = at the end of each epoch); the best checkpoint by the
    # task's main metric (on the first eval split) is kept.
    c.train.eval_every = 0
    # Save the full training state (params, optimizer, step) every N steps (0 = at each
    # evaluation) under seed_<k>/state, and on SIGTERM (then exit 0): rerunning the command
    # continues an interrupted seed where it stopped, bit for bit.
    c.train.checkpoint_every = 0
    # Fraction of the steps spent warming the learning rate up (BERT: 0.1).
    c.train.warmup_fraction = 0.1

    # The optimizer as pretraining's (optim_config below), warmup from
    # train.warmup_fraction, plus:
    c.optim = optim_config(learning_rate=2e-5)
    # No gradient clipping by default (pretraining clips at 1.0). A fine-tuning step's global
    # gradient norm runs at 1-8, so clipping at 1.0 rescales nearly every step; on the
    # short-text benchmark (benchmarks/finetune_vs_torch.py, RESULTS.md) it cost 3.5 points
    # of dev accuracy against the plain PyTorch loop, which does not clip. BERT's
    # run_classifier.py and HF's Trainer clip at 1.0: --config.optim.clip_norm=1.0 does too.
    c.optim.clip_norm = 0.0
    # Layer-wise learning-rate decay, as ELECTRA's: with depth 0 for the embeddings, i+1 for
    # layer i, L+1 for the pooler and L+2 for the task head, a parameter learns at
    # lr * decay^(L+2-depth). 1.0 = off; ELECTRA used 0.8 (base) and 0.9 (large).
    c.optim.layerwise_decay = 1.0
    # Mesh and jax.distributed as pretraining's.
    c.mesh = mesh_config()
    c.distributed = distributed_config()
    return c


# --- sections both trainers share --------------------------------------------------------------


def compute_config() -> ml_collections.ConfigDict:
    """How the model is computed (not what it is); fine-tuning's config shares it."""
    m = ml_collections.ConfigDict()
    # Compute dtype (parameters stay fp32): float32 or bfloat16.
    m.dtype = "float32"
    # Rematerialization of each block: none, full, dots, dots_no_batch, offload_dots.
    m.remat_policy = "none"
    # Compile one block and scan it over the layers (False: unroll; +13% for BERT-Large on
    # a GPU at 2.7x the compile time, slower on CPU).
    m.scan_layers = True
    # Attention kernel: auto (JAX chooses; XLA today), xla, or cudnn (GPU flash attention:
    # bf16/fp16 and attention_dropout=0).
    m.attention_impl = "auto"
    # Dropout (-1 = the preset's or, fine-tuning, the checkpoint's: 0.1 for published BERTs).
    m.hidden_dropout = -1.0
    m.attention_dropout = -1.0
    return m


def optim_config(learning_rate: float, warmup_steps: int | None = None) -> ml_collections.ConfigDict:
    """The optimizer; warmup_steps=None leaves the field out (fine-tuning warms up by a fraction)."""
    o = ml_collections.ConfigDict()
    # adamw or lamb; no weight decay on LayerNorm parameters and biases.
    o.name = "adamw"
    o.learning_rate = learning_rate
    if warmup_steps is not None:
        o.warmup_steps = warmup_steps
    # After warmup: linear, polynomial (with power) or constant, down to end_learning_rate.
    o.decay = "linear"
    o.power = 1.0
    o.end_learning_rate = 0.0
    o.weight_decay = 0.01
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-6
    # Global-norm gradient clipping (0 = off).
    o.clip_norm = 1.0
    return o


def mesh_config() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    # Mesh axis sizes; one -1 fills the devices. fsdp shards parameters and optimizer
    # state (ZeRO-3); tensor splits attention heads and MLP columns.
    m.data = -1
    m.fsdp = 1
    m.tensor = 1
    return m


def distributed_config() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    # jax.distributed: coordinator host:port ("" = from BERT_JAX_COORDINATOR, or single
    # process, or auto-detected on Cloud TPU), process count and this process's id.
    d.coordinator = ""
    d.num_processes = 0
    d.process_id = -1
    d.timeout_seconds = 300
    return d
