"""`Model`: one encoder plus the heads a task needs, named as the objectives use them.

HEADS:
  mlm                   masked-LM logits (at `masked_positions` when given)
  nsp / sop             next-sentence / sentence-order logits [batch, 2]
  rtd                   ELECTRA replaced-token logits [batch, seq]
  classification        sequence classification / regression [batch, num_labels]
  token_classification  [batch, seq, num_labels]
  span                  extractive QA start/end logits, each [batch, seq]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from bert_jax.errors import UserError
from bert_jax.models import heads as H
from bert_jax.models.config import EncoderConfig
from bert_jax.models.encoder import Encoder

Array = jax.Array
HEADS = ("mlm", "nsp", "sop", "rtd", "classification", "token_classification", "span")
_NEEDS_POOLER = ("nsp", "sop")


class Model(nnx.Module):
    def __init__(
        self,
        config: EncoderConfig,
        heads: Sequence[str] = (),
        num_labels: int = 2,
        *,
        rngs: nnx.Rngs,
        own_embeddings: bool = True,
    ):
        heads = tuple(heads)
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise UserError(f"unknown head(s) {unknown}; choose from: {', '.join(HEADS)}")
        if not config.use_pooler and any(h in _NEEDS_POOLER for h in heads):
            raise UserError(
                f"heads nsp/sop need a pooler, but this {config.family} model has use_pooler=False"
            )
        if not config.use_pooler and "classification" in heads and config.classifier == "pooler":
            raise UserError(
                f"the classification head of this {config.family} model (classifier='pooler') "
                "needs use_pooler=True"
            )
        self.config = config
        self.heads = heads
        self.num_labels = num_labels
        self.encoder = Encoder(config, rngs=rngs, own_embeddings=own_embeddings)
        has = heads.__contains__
        self.mlm = H.MaskedLMHead(config, rngs=rngs) if has("mlm") else None
        self.nsp = H.SentencePairHead(config, rngs=rngs) if has("nsp") else None
        self.sop = H.SentencePairHead(config, rngs=rngs) if has("sop") else None
        self.rtd = H.ReplacedTokenHead(config, rngs=rngs) if has("rtd") else None
        self.classification = (
            H.SequenceClassificationHead(config, num_labels, rngs=rngs) if has("classification") else None
        )
        self.token_classification = (
            H.TokenClassificationHead(config, num_labels, rngs=rngs) if has("token_classification") else None
        )
        self.span = H.SpanHead(config, rngs=rngs) if has("span") else None

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
        position_ids: Array | None = None,
        packing_ids: Array | None = None,
        masked_positions: Array | None = None,
        rng: Array | None = None,
        embeddings=None,
        cls_positions: Array | None = None,
    ) -> dict[str, Array]:
        """All outputs by name: hidden, cls, pooled, and `<head>_logits` for each head.
        `embeddings`: another model's embeddings to use (and tie the MLM decoder to).
        `cls_positions` [batch, K]: the [CLS] of each example of a packed row; sequence
        outputs (cls, pooled, classification_logits) then have a K axis after batch."""
        keys = [None] * 5 if rng is None else list(jax.random.split(rng, 5))
        embeddings = embeddings or self.encoder.embeddings
        out = self.encoder(
            input_ids,
            attention_mask,
            segment_ids,
            position_ids,
            packing_ids,
            rng=keys[0],
            embeddings=embeddings,
            cls_positions=cls_positions,
        )
        hidden = out["hidden"]
        if self.mlm is not None:
            out["mlm_logits"] = self.mlm(hidden, embeddings.word, masked_positions)
        if self.nsp is not None:
            out["nsp_logits"] = self.nsp(out["pooled"], keys[1])
        if self.sop is not None:
            out["sop_logits"] = self.sop(out["pooled"], keys[1])
        if self.rtd is not None:
            out["rtd_logits"] = self.rtd(hidden)
        if self.classification is not None:
            out["classification_logits"] = self.classification(out, keys[2])
        if self.token_classification is not None:
            out["token_classification_logits"] = self.token_classification(hidden, keys[3])
        if self.span is not None:
            out["start_logits"], out["end_logits"] = self.span(hidden)
        return out


def create(config: EncoderConfig, heads: Sequence[str] = (), num_labels: int = 2, seed: int = 0) -> Model:
    return Model(config, heads, num_labels, rngs=nnx.Rngs(seed))


def abstract(config: EncoderConfig, heads: Sequence[str] = (), num_labels: int = 2) -> Model:
    """The model with ShapeDtypeStructs for arrays: shapes without allocating anything."""
    return nnx.eval_shape(lambda: create(config, heads, num_labels))


def count_params(model: Model) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
