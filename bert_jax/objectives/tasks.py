"""Fine-tuning objectives, one per task kind (data/finetuning: classification, regression,
span, token_classification): the outputs its head gives and its loss.

    objective = tasks.for_kind(kind)     # .OUTPUTS, .denominators, .loss_fn, .predict
    loss, sums = objective.loss_fn(model, batch, rng, objective.denominators(batch))

The interface is the pretraining objectives' (`denominators` are whole-batch normalizers, so
microbatches sum to the whole batch's loss exactly). `weights` in a batch is 0 on padding: per
row [batch], or per packed example slot [rows, K] (token labels: per row).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

OUTPUTS = {
    "classification": ("classification_logits",),
    "regression": ("classification_logits",),
    "span": ("start_logits", "end_logits"),
    "token_classification": ("token_classification_logits",),
}


def forward(model, batch, rng=None):
    """Packed batches carry packing_ids and cls_positions; bucketed ones do not."""
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["segment_ids"],
        packing_ids=batch.get("packing_ids"),
        cls_positions=batch.get("cls_positions"),
        rng=rng,
    )


def _scored(kind: str, batch) -> jax.Array:
    """bool: the label positions the loss averages over (real examples with a label)."""
    w = batch["weights"]
    if kind == "token_classification":
        return (batch["labels"] >= 0) & (w[:, None] > 0)  # labels [batch, seq], -100 off word starts
    if kind == "regression":
        return (w > 0) & ~jnp.isnan(batch["labels"])
    if kind == "span":
        return w > 0
    return (w > 0) & (batch["labels"] >= 0)


def _per_example(kind: str, out: dict, batch) -> jax.Array:
    if kind == "token_classification":
        labels = jnp.maximum(batch["labels"], 0)
        return optax.softmax_cross_entropy_with_integer_labels(out["token_classification_logits"], labels)
    if kind == "span":
        # Over the row's tokens only: a padding position is never an answer, and a batch cut
        # to a narrower bucket scores the same as a full-width one.
        tokens = batch["attention_mask"] > 0

        def ce(logits, y):
            return optax.softmax_cross_entropy_with_integer_labels(jnp.where(tokens, logits, -1e9), y)

        return 0.5 * (
            ce(out["start_logits"], batch["start_positions"]) + ce(out["end_logits"], batch["end_positions"])
        )
    if kind == "regression":
        return jnp.square(out["classification_logits"][..., 0] - jnp.nan_to_num(batch["labels"]))
    logits, labels = out["classification_logits"], jnp.maximum(batch["labels"], 0)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def task_loss(kind: str, out: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(mean loss, count) over the batch's scored examples (tokens, for token labels)."""
    keep = _scored(kind, batch)
    n = keep.sum()
    return jnp.where(keep, _per_example(kind, out, batch), 0.0).sum() / jnp.maximum(n, 1), n


@dataclasses.dataclass(frozen=True)
class TaskObjective:
    kind: str

    @property
    def OUTPUTS(self) -> tuple[str, ...]:  # noqa: N802 - named as the pretraining objectives' HEADS
        return OUTPUTS[self.kind]

    def denominators(self, batch) -> dict:
        return {"scored": jnp.maximum(_scored(self.kind, batch).sum(), 1).astype(jnp.float32)}

    def loss_fn(self, model, batch, rng, denom):
        keep = _scored(self.kind, batch)
        per = _per_example(self.kind, forward(model, batch, rng), batch)
        return jnp.where(keep, per, 0.0).sum() / denom["scored"], {}

    def predict(self, model, batch) -> dict:
        out = forward(model, batch)
        return {k: out[k] for k in self.OUTPUTS}


def for_kind(kind: str) -> TaskObjective:
    return TaskObjective(kind)
