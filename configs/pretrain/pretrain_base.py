"""The pretraining config every family file starts from; each field is commented.

Not run directly: use configs/pretrain/{bert,roberta,albert,electra}.py.
"""

import importlib.util
import os

import ml_collections

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "pretraining.py")


def _data_config(family: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_data_pretraining", _DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(family)


def parse_arg(arg: str, allowed: dict) -> dict:
    """'size=base,runlocal=1' -> {'size': 'base', 'runlocal': '1'} over the allowed keys."""
    values = dict(allowed)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in allowed:
            raise ValueError(f"config argument {key!r} is unknown; use one of: {', '.join(allowed)}")
        values[key] = value
    return values


def base_config(family: str, size: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Which objective trains the model: bert (MLM+NSP), roberta (MLM), albert (MLM+SOP), electra.
    c.objective = family

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
    c.data.prepare = _data_config(family)
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


# Sections the fine-tuning configs share (configs/finetune/finetune_base.py loads this file).


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
