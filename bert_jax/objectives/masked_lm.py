"""Masked-LM and sentence-pair terms shared by the BERT, RoBERTa and ALBERT objectives.

Every term returns its loss divided by a denominator computed over the WHOLE batch
(`denominators`), plus raw sums for metrics. A step split into microbatches therefore
adds up to exactly the loss and gradient of the full batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bert_jax.models import model as model_lib

Array = jax.Array


def model_inputs(batch: dict[str, Array]) -> dict[str, Array]:
    """The stream's fields the encoder takes (positions come from packing ids)."""
    return {
        "input_ids": batch["input_ids"],
        "segment_ids": batch["segment_ids"],
        "packing_ids": batch["packing_ids"],
    }


def mlm_denominator(batch) -> Array:
    return jnp.maximum(batch["masked_weights"].sum(), 1.0)


def mlm_terms(logits: Array, batch, denom: Array, prefix: str = "mlm"):
    """Cross-entropy at the masked positions: logits [batch, P, vocab] (fp32).

    Written out rather than optax.softmax_cross_entropy_with_integer_labels + argmax: the
    label's logit is picked by a one-hot select, whose gradient is one fused elementwise
    pass (take_along_axis's is a scatter into a zeroed [rows, vocab] array), and a
    prediction is correct when the label's logit is the maximum (argmax is a slow
    value-and-index reduction over the vocabulary on CPU; only exact ties differ).
    """
    w = batch["masked_weights"]
    hit = jnp.arange(logits.shape[-1], dtype=jnp.int32) == batch["masked_ids"][..., None]
    label_logit = jnp.where(hit, logits, 0.0).sum(-1)
    nll = jax.nn.logsumexp(logits, axis=-1) - label_logit
    correct = (label_logit >= jax.lax.stop_gradient(logits.max(-1))) * w
    loss_sum = (nll * w).sum()
    return loss_sum / denom, {
        f"{prefix}_loss": loss_sum,
        f"{prefix}_correct": correct.sum(),
        f"{prefix}_count": w.sum(),
    }


def pair_terms(logits: Array, batch, denom: Array, prefix: str):
    """NSP / SOP: 2-way classification of each row, label in batch['sentence_label']."""
    labels = batch["sentence_label"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return nll.sum() / denom, {
        f"{prefix}_loss": nll.sum(),
        f"{prefix}_correct": correct.sum(),
        f"{prefix}_count": jnp.asarray(labels.shape[0], jnp.float32),
    }


def pretraining_loss(model, batch, rng, denom, pair_head: str | None):
    out = model(**model_inputs(batch), masked_positions=batch["masked_positions"], rng=rng)
    loss, sums = mlm_terms(out["mlm_logits"], batch, denom["mlm"])
    if pair_head is not None:
        pair_loss, pair_sums = pair_terms(out[f"{pair_head}_logits"], batch, denom["rows"], pair_head)
        loss = loss + pair_loss
        sums.update(pair_sums)
    return loss, sums


def builder(heads: tuple[str, ...]):
    """`build` for an objective whose network is one Model with these heads."""

    def build(config, settings, rngs):
        return model_lib.Model(config, heads, rngs=rngs)

    return build


def mlm_denominators(batch):
    return {"mlm": mlm_denominator(batch)}


def pair_denominators(batch):
    return {"mlm": mlm_denominator(batch), "rows": jnp.asarray(batch["input_ids"].shape[0], jnp.float32)}
