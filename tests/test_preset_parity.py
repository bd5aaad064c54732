"""Export parity for every named preset and every head its family exports (issue #18).

Each preset keeps every shape field (widths, embedding size, heads, FFN, vocabulary, position
and segment tables); only its depth is cut to at most 2 layers, so presets that differ only in
depth (bert-L4-H256 and bert-mini, say) share one case. For each case our model gets random
weights of a trained model's scale, then for each transformers class of the family:
  - `hf.save` writes it and transformers v5 loads it with no missing, unexpected or
    mis-shaped weights;
  - every logit (and the last hidden state) is within 1e-5 of ours, fp32;
  - reading the export back gives our parameters bit for bit.
"""

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402
from flax import nnx  # noqa: E402

from bert_jax.convert import hf  # noqa: E402
from bert_jax.models import model as M  # noqa: E402
from bert_jax.models.config import PRESETS  # noqa: E402

TOL = 1e-5
B, S = 2, 16
MAX_LAYERS = 2
NUM_LABELS = 3

# The transformers classes of each family, as the heads that select them, and the outputs
# compared: ours -> theirs.
CLASSES = {
    "bert": [
        (),
        ("mlm",),
        ("mlm", "nsp"),
        ("nsp",),
        ("classification",),
        ("token_classification",),
        ("span",),
    ],
    "roberta": [(), ("mlm",), ("classification",), ("token_classification",), ("span",)],
    "albert": [(), ("mlm",), ("mlm", "sop"), ("classification",), ("token_classification",), ("span",)],
    "electra": [(), ("mlm",), ("rtd",), ("classification",), ("token_classification",), ("span",)],
}
OUTPUTS = {
    ("mlm",): {"mlm_logits": "logits"},
    ("mlm", "nsp"): {"mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits"},
    ("mlm", "sop"): {"mlm_logits": "prediction_logits", "sop_logits": "sop_logits"},
    ("nsp",): {"nsp_logits": "logits"},
    ("rtd",): {"rtd_logits": "logits"},
    ("classification",): {"classification_logits": "logits"},
    ("token_classification",): {"token_classification_logits": "logits"},
    ("span",): {"start_logits": "start_logits", "end_logits": "end_logits"},
}


def _cases():
    """Presets grouped by their depth-cut config: {cut config: [preset names]}."""
    groups: dict = {}
    for name, config in PRESETS.items():
        cut = config.replace(num_layers=min(config.num_layers, MAX_LAYERS))
        groups.setdefault(cut, []).append(name)
    return list(groups.items())


CASES = _cases()


def test_every_preset_and_family_is_covered():
    covered = [n for _, names in CASES for n in names]
    assert sorted(covered) == sorted(PRESETS)
    assert {c.family for c, _ in CASES} == set(CLASSES)
    # The shapes that broke before (#18): ALBERT and ELECTRA at E == H and E != H.
    kinds = {(c.family, c.embed_dim == c.hidden_size) for c, _ in CASES}
    assert {("albert", True), ("albert", False), ("electra", True), ("electra", False)} <= kinds


def random_params(config, heads, seed=0):
    """Our model with every parameter random at a trained model's scale: kernels and tables
    N(0, initializer_range), biases N(0, 0.02), LayerNorm scales 1 + N(0, 0.1). Built from
    shapes alone, so the biggest preset is allocated once."""
    abstract = M.abstract(config, heads, NUM_LABELS)
    graphdef, state = nnx.split(abstract)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
    rng = np.random.default_rng(seed)
    values = []
    for path, leaf in leaves:
        x = rng.standard_normal(leaf.shape, dtype=np.float32)
        name = path[-1].key
        if name == "scale":
            x = 1 + 0.1 * x
        elif name == "bias" and path[-2].key.endswith("norm"):
            x *= 0.1
        elif name == "bias":
            x *= 0.02
        else:
            x *= config.initializer_range
        values.append(x)
    pure = jax.tree_util.tree_unflatten(treedef, values)
    return nnx.merge(graphdef, pure), pure


def random_batch(config, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (B, S))
    mask = np.ones((B, S), np.int64)
    mask[1, 9:] = 0
    ids[mask == 0] = config.pad_token_id
    segments = rng.integers(0, config.type_vocab_size, (B, S)) * mask
    return ids, mask, segments


@pytest.mark.parametrize("config,names", CASES, ids=["+".join(n) for _, n in CASES])
def test_preset_exports_match_transformers(tmp_path, config, names):
    family = config.family
    all_heads = tuple(dict.fromkeys(h for heads in CLASSES[family] for h in heads))
    ours, pure = random_params(config, all_heads)
    ids, mask, segments = random_batch(config)
    mine = jax.tree.map(np.asarray, ours(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(segments)))
    labels = ("neg", "neu", "pos")
    report = {}
    for heads in CLASSES[family]:
        out = tmp_path / ("-".join(heads) or "base")
        keep = {"encoder": pure["encoder"], **{h: pure[h] for h in heads}}
        hf.save(config, heads, keep, str(out), num_labels=NUM_LABELS, label_names=labels)
        cls = getattr(T, hf.architecture(family, heads))
        theirs, info = cls.from_pretrained(str(out), output_loading_info=True)
        assert not any(info.values()), (names[0], heads, info)  # no missing/unexpected/mismatched
        theirs.eval()
        with torch.no_grad():
            t = theirs(
                input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(segments),
                output_hidden_states=True,
            )
        diffs = {"hidden": np.abs(mine["hidden"] - t.hidden_states[-1].numpy()).max()}
        if heads == () and family != "electra":
            diffs["pooled"] = np.abs(mine["pooled"] - t.pooler_output.numpy()).max()
        for ours_name, their_name in OUTPUTS.get(heads, {}).items():
            value = getattr(t, their_name).numpy()
            diffs[ours_name] = np.abs(mine[ours_name].reshape(value.shape) - value).max()
        report["-".join(heads) or "base"] = max(diffs.values())
        assert all(v <= TOL for v in diffs.values()), (names[0], heads, diffs)

        # ours -> HF -> ours: bit for bit (the pooler only where the class builds one).
        back = hf.load(str(out))
        has_pooler = getattr(theirs.base_model, "pooler", None) is not None
        expect = dict(keep, encoder={k: v for k, v in keep["encoder"].items() if k != "pooler" or has_pooler})
        want = dict(jax.tree_util.tree_flatten_with_path(expect)[0])
        got = dict(jax.tree_util.tree_flatten_with_path(back.params)[0])
        assert set(want) == set(got), (heads, set(want) ^ set(got))
        for path, value in want.items():
            np.testing.assert_array_equal(value, got[path], err_msg=f"{heads} {path}")
        assert back.config.embedding_projection == config.embedding_projection
        del theirs, back
        shutil.rmtree(out)  # up to 850 MB an export (albert-xxlarge): the run keeps ~19 GB otherwise
    print("+".join(names), {k: f"{v:.1e}" for k, v in report.items()})
