"""Fine-tuning batch layouts (bert_jax/data/finetuning/packing.py): every example exactly once,
its tokens, segments and labels moved whole; each example's logits in a packed row equal to its
own; a packed or bucketed step's loss and gradient equal the padded step's; outputs of any
layout map back to the split's order."""

import numpy as np
import pytest

from bert_jax.data.finetuning import packing

S = 32


def rows(n=40, seed=0, kind="classification"):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 20, n)
    ids = np.zeros((n, S), np.int32)
    seg = np.zeros((n, S), np.int32)
    mask = np.zeros((n, S), np.int32)
    for i, m in enumerate(lengths):
        ids[i, :m] = rng.integers(5, 100, m)
        ids[i, 0] = 2  # [CLS]
        seg[i, m // 2 : m] = 1
        mask[i, :m] = 1
    arrays = {"input_ids": ids, "segment_ids": seg, "attention_mask": mask}
    if kind == "classification":
        arrays["labels"] = rng.integers(0, 3, n).astype(np.int32)
    elif kind == "regression":
        arrays["labels"] = rng.normal(size=n).astype(np.float32)
    elif kind == "token_classification":
        arrays["labels"] = np.where(mask == 1, rng.integers(0, 5, (n, S)), -100).astype(np.int32)
    else:
        arrays["start_positions"] = np.array([rng.integers(0, m) for m in lengths], np.int32)
        arrays["end_positions"] = np.minimum(arrays["start_positions"] + 1, lengths - 1).astype(np.int32)
    return arrays, lengths


@pytest.mark.parametrize("kind", ["classification", "regression", "token_classification", "span"])
def test_every_example_once_and_whole(kind):
    arrays, lengths = rows(kind=kind)
    p = packing.pack(arrays, np.random.default_rng(1).permutation(len(lengths)), max_per_row=4)
    assert len(p["input_ids"]) < len(lengths)  # fewer rows than examples
    seen = p["example_index"][p["example_index"] >= 0]
    assert sorted(seen) == list(range(len(lengths)))
    for r, members in enumerate(p["example_index"]):
        assert p["attention_mask"][r].sum() <= S
        for slot, i in enumerate(members):
            if i < 0:
                continue
            at, m = p["cls_positions"][r, slot], lengths[i]
            tokens = slice(at, at + m)
            np.testing.assert_array_equal(p["input_ids"][r, tokens], arrays["input_ids"][i, :m])
            np.testing.assert_array_equal(p["segment_ids"][r, tokens], arrays["segment_ids"][i, :m])
            assert (p["packing_ids"][r, tokens] == slot + 1).all()
            assert p["input_ids"][r, at] == 2  # the slot's [CLS]
            if kind == "token_classification":
                np.testing.assert_array_equal(p["labels"][r, tokens], arrays["labels"][i, :m])
            elif kind == "span":
                for name in ("start_positions", "end_positions"):
                    assert p[name][r, slot] == at + arrays[name][i]
            else:
                np.testing.assert_array_equal(p["labels"][r, slot], arrays["labels"][i])
        assert (p["packing_ids"][r][p["attention_mask"][r] == 0] == 0).all()


def test_rows_padded_to_a_multiple_of_the_quantum_and_minus_one_skipped():
    arrays, lengths = rows()
    indices = np.concatenate([np.arange(10), -np.ones(6, np.int64)])
    p = packing.pack(arrays, indices, 4, quantum=4)
    assert len(p["input_ids"]) % 4 == 0
    assert sorted(p["example_index"][p["example_index"] >= 0]) == list(range(10))
    empty = ~(p["packing_ids"] > 0).any(axis=1)
    assert empty.any() and (p["example_index"][empty] == -1).all()


def test_unpack_returns_source_order():
    arrays, lengths = rows()
    p = packing.pack(arrays, np.random.default_rng(3).permutation(len(lengths)), 4)
    per_slot = np.where(p["example_index"] >= 0, p["example_index"] * 10, -7)[..., None].astype(np.float32)
    out = packing.unpack(per_slot, p["example_index"], len(lengths))
    np.testing.assert_array_equal(out[:, 0], np.arange(len(lengths)) * 10)


def test_bucket_widths():
    assert packing.bucket_widths(128) == (32, 64, 96, 128)
    assert packing.bucket_widths(384) == (96, 192, 288, 384)
    assert packing.bucket_widths(20) == (8, 16, 20)


def test_an_example_longer_than_the_row_is_refused():
    with pytest.raises(ValueError, match="more than the row length"):
        packing.assign(np.array([5, 40]), S, 4, np.array([0, 1]))


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_packed_logits_equal_each_examples_own(family):
    """A packed row through the model: each example's classification logits (through its own
    [CLS]: the pooler for BERT/ALBERT, the dense layer for RoBERTa/ELECTRA), token logits and
    span logits equal those of the example run alone (dropout off), within 1e-5."""
    import jax.numpy as jnp

    from bert_jax.models import model as M
    from bert_jax.models.config import get_preset

    config = get_preset(f"{family}-tiny", vocab_size=128, num_layers=2)
    heads = ("classification", "token_classification", "span")
    model = M.create(config, heads, num_labels=3, seed=4)
    arrays, lengths = rows(n=6, seed=5)
    arrays["input_ids"] = np.minimum(arrays["input_ids"], 127)
    if config.type_vocab_size == 1:
        arrays["segment_ids"][:] = 0
    p = packing.pack(arrays, np.arange(len(lengths)), max_per_row=3)
    # Positions restart per example: the encoder derives them from packing_ids (with the
    # family's offset, e.g. RoBERTa's).
    packed = model(
        jnp.asarray(p["input_ids"]),
        jnp.asarray(p["attention_mask"]),
        jnp.asarray(p["segment_ids"]),
        packing_ids=jnp.asarray(p["packing_ids"]),
        cls_positions=jnp.asarray(p["cls_positions"]),
    )
    for r, members in enumerate(p["example_index"]):
        for slot, i in enumerate(members):
            if i < 0:
                continue
            m, at = lengths[i], p["cls_positions"][r, slot]
            alone = model(
                jnp.asarray(arrays["input_ids"][i : i + 1, :m]),
                jnp.ones((1, m), jnp.int32),
                jnp.asarray(arrays["segment_ids"][i : i + 1, :m]),
            )
            np.testing.assert_allclose(
                packed["classification_logits"][r, slot], alone["classification_logits"][0], atol=1e-5
            )
            np.testing.assert_allclose(
                packed["token_classification_logits"][r, at : at + m],
                alone["token_classification_logits"][0],
                atol=1e-5,
            )
            for name in ("start_logits", "end_logits"):
                np.testing.assert_allclose(packed[name][r, at : at + m], alone[name][0], atol=1e-5)


def test_best_fit_fills_rows():
    """12,000 examples of 5-40 tokens into rows of 64: every row within its length and count
    limits, and at most 10% more rows than the tokens' lower bound."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 41, 12000)
    got = packing.assign(lengths, 64, 8, rng.permutation(12000))
    assert sorted(i for row in got for i in row) == list(range(12000))
    assert all(sum(lengths[i] for i in row) <= 64 and len(row) <= 8 for row in got)
    assert len(got) <= 1.1 * lengths.sum() / 64 + 1, (len(got), lengths.sum() / 64)


def _tiny_model(family="bert"):
    from bert_jax.models import model as M
    from bert_jax.models.config import get_preset

    config = get_preset(f"{family}-tiny", vocab_size=128, num_layers=2)
    return M.create(config, ("classification", "token_classification", "span"), num_labels=3, seed=4)


HEAD_OF = {"classification": "classification", "regression": "classification", "span": "span"}


@pytest.mark.parametrize(
    "kind,packed",
    [
        ("classification", True),
        ("regression", True),
        ("token_classification", True),
        ("span", False),
        ("classification", False),
    ],
)
def test_a_step_on_the_layout_equals_the_padded_step(kind, packed):
    """The loss and gradient of a step on packed (or bucketed) rows equal those of the same
    examples one per padded row (the step's last rows empty, as an epoch's last batch)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from bert_jax.objectives import tasks

    model = _tiny_model()
    graphdef, params = nnx.split(model)
    arrays, lengths = rows(n=12, seed=7, kind=kind)
    if kind == "regression":
        arrays["labels"][3] = np.nan  # an unlabelled row weighs nothing
    indices = np.concatenate([np.random.default_rng(0).permutation(12)[:10], [-1, -1]])
    layout = packing.Layout(packed=True, max_per_row=4, quantum=2) if packed else packing.Layout(packed=False)
    got = layout.batch(arrays, indices)
    if packed:
        assert len(got["input_ids"]) < len(indices)
    else:
        assert got["input_ids"].shape[1] < S  # cut to a bucket
    take = np.maximum(indices, 0)
    padded = {k: v[take] for k, v in arrays.items()}
    padded["weights"] = (indices >= 0).astype(np.float32)

    def loss(params, batch):
        batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "example_index"}
        return tasks.task_loss(kind, tasks.forward(nnx.merge(graphdef, params), batch), batch)

    (l1, n1), g1 = jax.value_and_grad(loss, has_aux=True)(params, got)
    (l2, n2), g2 = jax.value_and_grad(loss, has_aux=True)(params, padded)
    assert int(n1) == int(n2) > 0
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    flat1, flat2 = jax.tree.leaves(g1), jax.tree.leaves(g2)
    assert max(float(jnp.abs(a).max()) for a in flat1) > 0
    for a, b in zip(flat1, flat2, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "kind,packed",
    [
        ("classification", True),
        ("token_classification", True),
        ("classification", False),
        ("token_classification", False),
        ("span", False),  # span QA is never packed (Layout.for_task)
    ],
)
def test_eval_batches_cover_every_example_and_map_back(kind, packed):
    """predict's layouts: outputs come back one row per example in the split's order, equal to
    a padded run's on every real position."""
    import jax.numpy as jnp

    model = _tiny_model("roberta")
    arrays, lengths = rows(n=23, seed=9, kind=kind)
    arrays["input_ids"] = np.minimum(arrays["input_ids"], 127)
    arrays["segment_ids"][:] = 0
    layout = packing.Layout(packed=True, max_per_row=5, quantum=1) if packed else packing.Layout(packed=False)
    names = finetune_outputs(kind)
    parts = []
    for batch, indices in layout.eval_batches(arrays, 4):
        out = model(
            jnp.asarray(batch["input_ids"]),
            jnp.asarray(batch["attention_mask"]),
            jnp.asarray(batch["segment_ids"]),
            packing_ids=None if "packing_ids" not in batch else jnp.asarray(batch["packing_ids"]),
            cls_positions=None if "cls_positions" not in batch else jnp.asarray(batch["cls_positions"]),
        )
        assert len(batch["input_ids"]) == 4
        parts.append((batch, indices, {k: np.asarray(out[k]) for k in names}))
    got = layout.outputs(parts, 23, S)
    ref = model(
        jnp.asarray(arrays["input_ids"]),
        jnp.asarray(arrays["attention_mask"]),
        jnp.asarray(arrays["segment_ids"]),
    )
    for name in names:
        assert got[name].shape == ref[name].shape
        for i, m in enumerate(lengths):
            want = np.asarray(ref[name][i])
            have = got[name][i]
            if name != "classification_logits":
                want, have = want[:m], have[:m]
            np.testing.assert_allclose(have, want, atol=1e-5)


def finetune_outputs(kind):
    from bert_jax.objectives import tasks

    return tasks.OUTPUTS[kind]
