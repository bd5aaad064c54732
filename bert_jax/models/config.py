"""The encoder architecture as one frozen, validated dataclass, and every named size.

`EncoderConfig` owns the architecture and the derived quantities (head size, embedding
width, position offset); `PRESETS` names every size of every family. Names follow the
Hugging Face hub where one exists (`bert-base`, `roberta-large`, `albert-xxlarge`,
`electra-small-generator`), and the BERT miniatures grid as Google published it
(`bert-L4-H256` = `bert-mini`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from bert_jax.errors import UserError

Family = Literal["bert", "roberta", "albert", "electra"]
FAMILIES: tuple[str, ...] = ("bert", "roberta", "albert", "electra")
ACTIVATIONS: tuple[str, ...] = ("gelu", "gelu_tanh", "relu")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
# Names of jax.checkpoint policies (see encoder.REMAT_POLICIES); "none" disables remat.
REMAT_POLICIES: tuple[str, ...] = ("none", "full", "dots", "dots_no_batch", "offload_dots")
# jax.nn.dot_product_attention's implementation: "auto" lets JAX choose (XLA today), "cudnn"
# is cuDNN flash attention (GPU, bf16/fp16, no attention dropout).
ATTENTION_IMPLS: tuple[str, ...] = ("auto", "xla", "cudnn")
# Position ids: "absolute" numbers a row's tokens 0, 1, ... (BERT, ALBERT, ELECTRA);
# "fairseq" numbers its non-padding tokens from pad_token_id + 1 and gives padding
# pad_token_id (RoBERTa). Both read a learned table; packed rows restart per sequence.
POSITIONS: tuple[str, ...] = ("absolute", "fairseq")
# What a sequence head classifies: "pooler" the pooled [CLS] (BERT, ALBERT); "cls_dense_tanh"
# and "cls_dense_gelu" the last hidden [CLS] through a dense layer of its own and that
# activation (RoBERTa; ELECTRA), as the HF heads of those families do.
CLASSIFIERS: tuple[str, ...] = ("pooler", "cls_dense_tanh", "cls_dense_gelu")
# What each family's models are: the defaults of the feature fields above (and what a record
# written before those fields existed meant).
FAMILY_FEATURES: dict[str, dict[str, str]] = {
    "bert": {"positions": "absolute", "classifier": "pooler"},
    "albert": {"positions": "absolute", "classifier": "pooler"},
    "roberta": {"positions": "fairseq", "classifier": "cls_dense_tanh"},
    "electra": {"positions": "absolute", "classifier": "cls_dense_gelu"},
}
# Fields that choose how the same model is computed, not what it is: a checkpoint written
# under one value resumes under another (training.pretrain.model_identity leaves them out).
RUNTIME_FIELDS: tuple[str, ...] = ("attention_impl",)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of one BERT-family encoder. Every field is checked on construction.

    The fields say what the model is; `family` only names it (presets, the Hugging Face
    model_type it converts to and from): nothing under models/ branches on it."""

    family: str = "bert"
    # POSITIONS and CLASSIFIERS above; None takes the family's (FAMILY_FEATURES).
    positions: str | None = None
    classifier: str | None = None
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    # ALBERT / ELECTRA factorize the embedding: tokens live in `embedding_size` and a
    # projection maps them to `hidden_size`. None means "same as hidden_size".
    embedding_size: int | None = None
    # A dense layer maps the embeddings to hidden_size. Set on construction whenever
    # embedding_size != hidden_size; True with equal widths is ALBERT's layout (transformers'
    # AlbertModel always has one), False with equal widths is ELECTRA's rule.
    embedding_projection: bool = False
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    # "gelu" is the exact erf form (BERT, RoBERTa, ELECTRA); "gelu_tanh" is ALBERT's gelu_new.
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # ALBERT: one block's weights applied num_layers times.
    share_layers: bool = False
    # ELECTRA has no pooler; BERT, RoBERTa and ALBERT do.
    use_pooler: bool = True
    # Compute dtype; parameters stay in param_dtype (fp32) whatever this is.
    dtype: str = "float32"
    param_dtype: str = "float32"
    # Compile one block and loop over the stacked weights (lax.scan) rather than unroll L.
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_impl: str = "auto"

    def __post_init__(self):
        def bad(field: str, value, expected: str):
            raise UserError(f"EncoderConfig.{field}={value!r} is invalid: expected {expected}")

        if self.family not in FAMILIES:
            bad("family", self.family, "one of " + ", ".join(FAMILIES))
        for field, value in FAMILY_FEATURES[self.family].items():
            if getattr(self, field) is None:  # also records written before the field existed
                object.__setattr__(self, field, value)
        if self.positions not in POSITIONS:
            bad("positions", self.positions, "one of " + ", ".join(POSITIONS))
        if self.classifier not in CLASSIFIERS:
            bad("classifier", self.classifier, "one of " + ", ".join(CLASSIFIERS))
        for field in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(field, value, "a positive integer")
        if self.embedding_size is not None and (
            not isinstance(self.embedding_size, int) or self.embedding_size < 1
        ):
            bad("embedding_size", self.embedding_size, "a positive integer or None")
        if not isinstance(self.embedding_projection, bool):
            bad("embedding_projection", self.embedding_projection, "True or False")
        if self.embed_dim != self.hidden_size and not self.embedding_projection:
            # Two widths need a projection: normalized here so that a record written before
            # this field existed (False by default) names the same architecture.
            object.__setattr__(self, "embedding_projection", True)
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"EncoderConfig.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            bad("hidden_act", self.hidden_act, "one of " + ", ".join(ACTIVATIONS))
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in DTYPES:
                bad(field, getattr(self, field), "one of " + ", ".join(DTYPES))
        if self.remat_policy not in REMAT_POLICIES:
            bad("remat_policy", self.remat_policy, "one of " + ", ".join(REMAT_POLICIES))
        for field in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                bad(field, getattr(self, field), "a probability in [0, 1)")
        if self.attention_impl not in ATTENTION_IMPLS:
            bad("attention_impl", self.attention_impl, "one of " + ", ".join(ATTENTION_IMPLS))
        if self.attention_impl == "cudnn" and (self.attention_dropout > 0 or self.dtype == "float32"):
            raise UserError(
                f"EncoderConfig.attention_impl='cudnn' needs attention_dropout=0 (got "
                f"{self.attention_dropout}) and a bfloat16/float16 dtype (got {self.dtype}): cuDNN "
                "flash attention through jax.nn.dot_product_attention has no dropout and no fp32"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            bad("pad_token_id", self.pad_token_id, f"an id in [0, vocab_size={self.vocab_size})")
        if self.position_offset + 1 > self.max_position_embeddings:
            bad(
                "max_position_embeddings",
                self.max_position_embeddings,
                f"more than the position offset {self.position_offset}",
            )

    # --- derived quantities -------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embed_dim(self) -> int:
        """Width of the token embedding table (E); differs from H for ALBERT and ELECTRA."""
        return self.embedding_size or self.hidden_size

    @property
    def position_offset(self) -> int:
        """The first position id: pad_token_id + 1 under fairseq numbering (RoBERTa), else 0."""
        return self.pad_token_id + 1 if self.positions == "fairseq" else 0

    @property
    def max_length(self) -> int:
        """Longest sequence the position table can hold."""
        return self.max_position_embeddings - self.position_offset

    def replace(self, **changes) -> EncoderConfig:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UserError(f"EncoderConfig has no field(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def architecture(self) -> dict:
        """to_dict without RUNTIME_FIELDS: what a checkpoint records as the model's identity."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    @classmethod
    def from_dict(cls, values: dict) -> EncoderConfig:
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"EncoderConfig has no field(s) {', '.join(unknown)}")
        return cls(**values)


# --- presets ------------------------------------------------------------------------------
def _bert(layers: int, hidden: int, heads: int | None = None) -> EncoderConfig:
    return EncoderConfig(
        family="bert",
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads or hidden // 64,
        intermediate_size=4 * hidden,
    )


def _roberta(layers: int, hidden: int, heads: int) -> EncoderConfig:
    return EncoderConfig(
        family="roberta",
        positions="fairseq",
        classifier="cls_dense_tanh",
        vocab_size=50265,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
    )


def _albert(layers: int, hidden: int, heads: int) -> EncoderConfig:
    # ALBERT v2 drops dropout (the paper's finding); the released v2 configs say 0.
    return EncoderConfig(
        family="albert",
        vocab_size=30000,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=4 * hidden,
        embedding_size=128,
        embedding_projection=True,
        hidden_act="gelu_tanh",
        share_layers=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def _electra(layers: int, hidden: int, heads: int, embedding: int, ffn: int) -> EncoderConfig:
    return EncoderConfig(
        family="electra",
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=ffn,
        embedding_size=embedding,
        use_pooler=False,
        classifier="cls_dense_gelu",
    )


BERT_GRID_LAYERS = (2, 4, 6, 8, 10, 12)
BERT_GRID_HIDDEN = (128, 256, 512, 768)


def _build_presets() -> dict[str, EncoderConfig]:
    presets: dict[str, EncoderConfig] = {}
    for layers in BERT_GRID_LAYERS:
        for hidden in BERT_GRID_HIDDEN:
            presets[f"bert-L{layers}-H{hidden}"] = _bert(layers, hidden)
    presets.update(
        {
            "bert-tiny": _bert(2, 128),
            "bert-mini": _bert(4, 256),
            "bert-small": _bert(4, 512),
            "bert-medium": _bert(8, 512),
            "bert-base": _bert(12, 768),
            "bert-large": _bert(24, 1024, heads=16),
            "roberta-base": _roberta(12, 768, 12),
            "roberta-large": _roberta(24, 1024, 16),
            "albert-base": _albert(12, 768, 12),
            "albert-large": _albert(24, 1024, 16),
            "albert-xlarge": _albert(24, 2048, 16),
            "albert-xxlarge": _albert(12, 4096, 64),
            # Discriminators and the generators Google released beside them (the small
            # generator is as wide as its discriminator; base/large use H=256, 4 heads).
            "electra-small": _electra(12, 256, 4, 128, 1024),
            "electra-base": _electra(12, 768, 12, 768, 3072),
            "electra-large": _electra(24, 1024, 16, 1024, 4096),
            "electra-small-generator": _electra(12, 256, 4, 128, 1024),
            "electra-base-generator": _electra(12, 256, 4, 768, 1024),
            "electra-large-generator": _electra(24, 256, 4, 1024, 1024),
            # Not published sizes: L2 H128 versions of every family, for CPU demos and tests.
            "roberta-tiny": _roberta(2, 128, 2),
            "albert-tiny": _albert(2, 128, 2),
            "electra-tiny": _electra(2, 128, 2, 128, 512),
        }
    )
    return presets


PRESETS: dict[str, EncoderConfig] = _build_presets()


def get_preset(name: str, **overrides) -> EncoderConfig:
    """The named preset, with optional field overrides (e.g. dtype="bfloat16")."""
    if name not in PRESETS:
        named = sorted(n for n in PRESETS if not n.startswith("bert-L"))
        raise UserError(
            f"model preset {name!r} is unknown; choose one of: {', '.join(named)}, "
            f"or bert-L{{{','.join(map(str, BERT_GRID_LAYERS))}}}-H{{"
            f"{','.join(map(str, BERT_GRID_HIDDEN))}}}"
        )
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
