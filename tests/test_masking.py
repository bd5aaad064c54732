"""Masked-LM masking (bert_jax.data.masking): rates, 80/10/10, whole words, spans, determinism.

Synthetic ids over a 1,000-id vocabulary: 0-3 are PAD, CLS, SEP, MASK; the rest are word starts
or continuation pieces. Statistical checks use binomial / chi-square tests at p > 1e-6, so a
correct implementation fails them about once in a million runs (they are deterministic anyway:
the keys are fixed).
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from bert_jax.data import masking
from bert_jax.data.masking import MaskingConfig, example_key, mask_batch
from bert_jax.errors import UserError

V = 1000
PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = np.zeros(V, bool)
SPECIAL[:4] = True
WORD_START = np.zeros(V, bool)
WORD_START[4:600] = True  # ids 600.. are continuation pieces ("##x")
STARTS, PIECES = np.arange(4, 600), np.arange(600, V)


def words_text(rng, num_tokens, max_word=3):
    """num_tokens ids made of words of 1..max_word tokens (the last word may be cut)."""
    word_lengths = rng.integers(1, max_word + 1, num_tokens)
    is_start = np.zeros(word_lengths.sum(), bool)
    is_start[np.cumsum(word_lengths) - word_lengths] = True
    is_start = is_start[:num_tokens]
    return np.where(is_start, rng.choice(STARTS, num_tokens), rng.choice(PIECES, num_tokens)).tolist()


def make_batch(rng, batch, seq, min_len=4, max_word=3):
    """[CLS] a [SEP] b [SEP] PAD...: random total lengths, split points and word lengths."""
    ids = np.full((batch, seq), PAD, np.int32)
    for b in range(batch):
        length = int(rng.integers(min_len, seq + 1))
        body = length - 3
        split = int(rng.integers(0, body + 1))
        row = [CLS, *words_text(rng, split, max_word), SEP, *words_text(rng, body - split, max_word), SEP]
        ids[b, :length] = row
    return ids


def num_to_predict(ids, config):
    cands = (~SPECIAL[ids]).sum(axis=1)
    n = np.minimum(config.max_predictions, np.maximum(1, np.round(cands * config.rate))).astype(int)
    return np.where(cands > 0, n, 0)


def py_words(row):
    """Words of one row as (first, end) token ranges, and each word's segment number."""
    words, segment, seg, prev = [], [], -1, False
    for i, t in enumerate(row):
        cand = not SPECIAL[t]
        if cand and not prev:
            seg += 1
        if cand and (WORD_START[t] or not prev):
            words.append([i, i + 1])
            segment.append(seg)
        elif cand:
            words[-1][1] = i + 1
        prev = cand
    return words, segment


def runs(chosen_row):
    """Maximal runs of True as (first, end) ranges."""
    edges = np.diff(np.concatenate([[0], chosen_row.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def chosen_mask(out):
    batch, seq = out["input_ids"].shape
    chosen = np.zeros((batch, seq), bool)
    rows, slots = np.nonzero(out["masked_weights"])
    chosen[rows, out["masked_positions"][rows, slots]] = True
    return chosen


def run(ids, config, seed=0, exclude=SPECIAL, keys=None):
    keys = example_key(seed, 0, np.arange(len(ids))) if keys is None else keys
    return mask_batch(ids, SPECIAL, WORD_START, keys, config, MASK, V, random_ids_exclude=exclude)


@pytest.fixture(scope="module")
def big_token_run():
    """4096 full rows of 126 candidates, token masking."""
    rng = np.random.default_rng(0)
    ids = np.full((4096, 128), SEP, np.int32)
    ids[:, 0] = CLS
    ids[:, 1:-1] = rng.integers(4, V, (4096, 126))
    config = MaskingConfig(max_predictions=32)
    return ids, config, run(ids, config)


def test_token_count_and_uniform_positions(big_token_run):
    ids, config, out = big_token_run
    chosen = chosen_mask(out)
    assert (num_to_predict(ids, config) == 19).all()  # round(126 * 0.15) = 19
    np.testing.assert_array_equal(chosen.sum(axis=1), 19)
    # Each of the 126 candidate positions is chosen with probability 19/126.
    per_position = chosen[:, 1:-1].sum(axis=0)
    p_values = [stats.binomtest(int(k), 4096, 19 / 126).pvalue for k in per_position]
    assert min(p_values) > 1e-6, (per_position.min(), per_position.max())
    assert not chosen[:, [0, -1]].any()


def test_80_10_10_split(big_token_run):
    ids, config, out = big_token_run
    rows, slots = np.nonzero(out["masked_weights"])
    pos = out["masked_positions"][rows, slots]
    original, new = ids[rows, pos], out["input_ids"][rows, pos]
    total = len(new)
    allowed = V - 4  # specials are excluded from random draws
    is_mask = new == MASK
    is_random = ~is_mask & (new != original)
    for observed, p in ((is_mask.sum(), 0.8), (is_random.sum(), 0.1 * (1 - 1 / allowed))):
        assert stats.binomtest(int(observed), total, p).pvalue > 1e-6, (observed, total, p)
    # Random replacements are uniform over the allowed ids and never special.
    drawn = new[is_random]
    assert not SPECIAL[drawn].any()
    counts = np.bincount(drawn, minlength=V)[4:]
    assert stats.chisquare(counts).pvalue > 1e-6
    # Nothing outside the chosen positions changes.
    untouched = ~chosen_mask(out)
    np.testing.assert_array_equal(out["input_ids"][untouched], ids[untouched])


def test_random_ids_without_exclusion_cover_whole_vocab():
    rng = np.random.default_rng(1)
    ids = make_batch(rng, 2048, 64, min_len=32)
    config = MaskingConfig(mask_prob=0.0, random_prob=1.0, max_predictions=64, rate=0.5)
    out = run(ids, config, exclude=None)
    rows, slots = np.nonzero(out["masked_weights"])
    drawn = out["input_ids"][rows, out["masked_positions"][rows, slots]]
    assert stats.chisquare(np.bincount(drawn, minlength=V)).pvalue > 1e-6
    assert SPECIAL[drawn].any()  # specials are allowed replacements when not excluded


@pytest.mark.parametrize("strategy", ["token", "whole_word", "span"])
def test_output_format_and_never_special(strategy):
    rng = np.random.default_rng(2)
    ids = make_batch(rng, 512, 96)
    ids[0] = PAD  # no candidates at all
    ids[1, :3] = [CLS, SEP, SEP]
    ids[1, 3:] = PAD
    config = MaskingConfig(strategy=strategy, max_predictions=12)
    out = run(ids, config)
    assert out["input_ids"].dtype == np.int32 and out["input_ids"].shape == ids.shape
    dtypes = {"masked_positions": np.int32, "masked_ids": np.int32, "masked_weights": np.float32}
    for name, dtype in dtypes.items():
        assert out[name].dtype == dtype and out[name].shape == (512, 12), name
    weights, pos = out["masked_weights"], out["masked_positions"]
    count = weights.sum(axis=1).astype(int)
    assert set(np.unique(weights)) <= {0.0, 1.0}
    slot = np.arange(12)
    np.testing.assert_array_equal(weights, (slot < count[:, None]).astype(np.float32))  # real slots first
    assert (pos[weights == 0] == 0).all() and (out["masked_ids"][weights == 0] == 0).all()
    assert count[0] == 0 and count[1] == 0
    n = num_to_predict(ids, config)
    assert (count <= n).all() and (n <= 12).all()
    if strategy == "token":
        np.testing.assert_array_equal(count, n)
    for b in range(len(ids)):
        p = pos[b, : count[b]]
        assert (np.diff(p) > 0).all()
        np.testing.assert_array_equal(out["masked_ids"][b, : count[b]], ids[b, p])
        assert not SPECIAL[ids[b, p]].any()


def test_cap_at_max_predictions():
    ids = np.full((8, 64), 7, np.int32)
    config = MaskingConfig(rate=1.0, max_predictions=5)
    out = run(ids, config)
    np.testing.assert_array_equal(out["masked_weights"].sum(axis=1), 5)


def test_whole_word_masks_whole_words_and_skips_like_bert():
    rng = np.random.default_rng(3)
    ids = make_batch(rng, 1024, 128, max_word=6)
    config = MaskingConfig(strategy="whole_word", max_predictions=20)
    chosen = chosen_mask(run(ids, config))
    n = num_to_predict(ids, config)
    unfilled = 0
    for b in range(len(ids)):
        words, _ = py_words(ids[b])
        count = int(chosen[b].sum())
        assert count <= n[b]
        room = n[b] - count
        unfilled += room > 0
        for first, end in words:
            masked = chosen[b, first:end]
            assert masked.all() or not masked.any(), (b, first, end)
            if not masked.any():
                # The skip rule leaves no word that would still fit: the result is maximal.
                assert end - first > room, (b, first, end, room)
    assert unfilled > 0  # long words do get skipped in this data, so the rule above is exercised


def test_whole_word_with_single_token_words_equals_token():
    rng = np.random.default_rng(4)
    ids = make_batch(rng, 256, 64)
    keys = example_key(5, 1, np.arange(256))
    everything_starts = np.ones(V, bool)
    outs = [
        mask_batch(ids, SPECIAL, everything_starts, keys, MaskingConfig(strategy=s), MASK, V)
        for s in ("token", "whole_word")
    ]
    for name in outs[0]:
        np.testing.assert_array_equal(outs[0][name], outs[1][name])


def ref_spans(row, n, anchors, lengths):
    """The documented span rule in plain Python, on the module's own candidate draws."""
    words, segment = py_words(row)
    chosen, used, accepted = np.zeros(len(row), bool), 0, []
    if not words:
        return chosen
    for a, length in zip(anchors, lengths, strict=True):
        seg_words = [i for i, s in enumerate(segment) if s == segment[a]]
        first, last = seg_words[0], seg_words[-1]
        lo_word = max(first, min(a, last - length + 1))
        hi_word = min(last, lo_word + length - 1)
        lo, hi = words[lo_word][0], words[hi_word][1]
        if used + hi - lo > n or any(lo <= h and s <= hi for s, h in accepted):
            continue
        accepted.append((lo, hi))
        used += hi - lo
        chosen[lo:hi] = True
    return chosen


@pytest.mark.parametrize("distribution", ["geometric", "ngram"])
def test_span_matches_reference_and_spans_are_separate(distribution):
    rng = np.random.default_rng(5)
    ids = make_batch(rng, 256, 128, max_word=4)
    config = MaskingConfig(strategy="span", span_distribution=distribution)
    keys = example_key(0, 0, np.arange(256))
    chosen = chosen_mask(run(ids, config, keys=keys))
    n = num_to_predict(ids, config)
    num_words = np.array([len(py_words(r)[0]) for r in ids])
    anchors, lengths = masking._span_draws(keys, num_words, config)
    max_len = len(config.span_length_probs)
    for b in range(len(ids)):
        expected = ref_spans(ids[b], n[b], anchors[b], lengths[b])
        np.testing.assert_array_equal(chosen[b], expected, err_msg=f"row {b}")
        words, _ = py_words(ids[b])
        starts, ends = {w[0] for w in words}, {w[1] for w in words}
        for lo, hi in runs(chosen[b]):  # spans never touch, so each run is one span
            assert lo in starts and hi in ends
            assert 1 <= sum(lo <= s < hi for s in starts) <= max_len
            assert not SPECIAL[ids[b, lo:hi]].any()
    assert (chosen.sum(axis=1) <= n).all()
    assert chosen.sum() > 0.9 * n.sum()  # candidates fill most of the budget


GEOMETRIC = 0.2 * 0.8 ** np.arange(10)  # SpanBERT: p = 0.2, clipped at 10 words


@pytest.mark.parametrize(
    "config,probs",
    [
        (
            MaskingConfig(strategy="span", span_distribution="geometric", span_p=0.2, max_span=10),
            GEOMETRIC / GEOMETRIC.sum(),
        ),
        (MaskingConfig(strategy="span", span_distribution="ngram", max_ngram=3), np.array([6, 3, 2]) / 11),
    ],
    ids=["geometric", "ngram"],
)
def test_span_lengths_follow_distribution(config, probs):
    """The span around each example's first anchor is never clipped, rejected or merged here (one
    segment of >= 42 words of <= 3 tokens, budget 32 >= 10 words x 3), so its observed length in
    words is a clean sample of the configured distribution."""
    config = dataclasses.replace(config, rate=0.3, max_predictions=32)
    rng = np.random.default_rng(6)
    batch = 4096
    ids = np.full((batch, 128), SEP, np.int32)
    ids[:, 0] = CLS
    for b in range(batch):
        ids[b, 1:-1] = words_text(rng, 126, max_word=3)
    keys = example_key(7, 0, np.arange(batch))
    chosen = chosen_mask(run(ids, config, keys=keys))
    is_start = WORD_START[ids]  # every row is [CLS] words [SEP] and words_text starts with a word
    starts = [np.flatnonzero(r) for r in is_start]
    anchors, lengths = masking._span_draws(keys, np.array([len(s) for s in starts]), config)
    observed = np.empty(batch, int)
    for b in range(batch):
        anchor_tok = starts[b][anchors[b, 0]]
        ((lo, hi),) = [(lo, hi) for lo, hi in runs(chosen[b]) if lo <= anchor_tok < hi]
        observed[b] = is_start[b, lo:hi].sum()
    np.testing.assert_array_equal(observed, lengths[:, 0])
    np.testing.assert_allclose(config.span_length_probs, probs, rtol=1e-12)
    counts = np.bincount(observed, minlength=len(probs) + 1)[1:]
    assert len(counts) == len(probs)
    assert stats.chisquare(counts, probs * batch).pvalue > 1e-6, counts
    # The draws for all candidates (many more samples) match too.
    all_counts = np.bincount(lengths.ravel(), minlength=len(probs) + 1)[1:]
    assert stats.chisquare(all_counts, probs * lengths.size).pvalue > 1e-6


@pytest.mark.parametrize("strategy", ["token", "whole_word", "span"])
def test_deterministic_and_batch_independent(strategy):
    rng = np.random.default_rng(8)
    ids = make_batch(rng, 64, 80)
    keys = example_key(11, 3, np.arange(100, 164))
    config = MaskingConfig(strategy=strategy)
    out = run(ids, config, keys=keys)
    again = run(ids.copy(), config, keys=keys.copy())
    for name in out:
        assert out[name].dtype == again[name].dtype
        np.testing.assert_array_equal(out[name], again[name])
    # Alone; extra padding; reordered among other examples: the same key gives the same mask.
    other = make_batch(rng, 32, 80)
    other_keys = example_key(11, 3, np.arange(1000, 1032))
    for i in (0, 17, 63):
        alone = run(ids[i : i + 1], config, keys=keys[i : i + 1])
        padded = run(np.pad(ids[i : i + 1], ((0, 0), (0, 23))), config, keys=keys[i : i + 1])
        mixed = run(
            np.concatenate([other[:5], ids[i : i + 1], other[5:]]),
            config,
            keys=np.concatenate([other_keys[:5], keys[i : i + 1], other_keys[5:]]),
        )
        for name in out:
            np.testing.assert_array_equal(alone[name][0], out[name][i])
            np.testing.assert_array_equal(padded[name][0, : out[name].shape[1]], out[name][i])
            np.testing.assert_array_equal(mixed[name][5], out[name][i])
    # Different keys give different masks (rows with few candidates may coincide by chance).
    fresh = run(ids, config, keys=example_key(11, 4, np.arange(100, 164)))
    differ = (fresh["masked_positions"] != out["masked_positions"]).any(axis=1)
    long_rows = (~SPECIAL[ids]).sum(axis=1) >= 40
    assert long_rows.sum() > 20 and differ[long_rows].all()


def test_example_key():
    keys = example_key(0, 0, np.arange(100_000))
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == 100_000
    np.testing.assert_array_equal(keys[5:9], example_key(0, 0, np.arange(5, 9)))
    assert not np.isin(example_key(1, 0, np.arange(1000)), keys[:1000]).any()
    assert not np.isin(example_key(0, 1, np.arange(1000)), keys[:1000]).any()
    top = 2**64 - 1
    assert example_key(top, 7, np.array([3]))[0] == example_key(top, 7, np.array([3], np.uint64))[0]
    with pytest.raises(UserError, match="seed"):
        example_key(-1, 0, np.arange(3))
    with pytest.raises(UserError, match="index"):
        example_key(0, 0, np.array([-1]))


@pytest.mark.parametrize(
    "field,value",
    [
        ("rate", 0.0),
        ("rate", 1.5),
        ("mask_prob", -0.1),
        ("random_prob", 1.2),
        ("random_prob", 0.3),
        ("max_predictions", 0),
        ("max_predictions", 2.0),
        ("strategy", "ngram"),
        ("span_distribution", "poisson"),
        ("span_p", 0.0),
        ("max_span", 0),
        ("max_ngram", True),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(UserError, match=rf"MaskingConfig\.{field}="):
        MaskingConfig(**{field: value})


def test_bad_inputs_raise_user_errors():
    ids = np.full((2, 8), 7, np.int32)
    keys = example_key(0, 0, np.arange(2))
    config = MaskingConfig()
    with pytest.raises(UserError, match="input_ids"):
        mask_batch(ids + V, SPECIAL, WORD_START, keys, config, MASK, V)
    with pytest.raises(UserError, match="special"):
        mask_batch(ids, SPECIAL[:10], WORD_START, keys, config, MASK, V)
    with pytest.raises(UserError, match="example_keys"):
        mask_batch(ids, SPECIAL, WORD_START, keys[:1], config, MASK, V)
    with pytest.raises(UserError, match="mask_id"):
        mask_batch(ids, SPECIAL, WORD_START, keys, config, V, V)
    with pytest.raises(UserError, match="random_ids_exclude"):
        mask_batch(ids, SPECIAL, WORD_START, keys, config, MASK, V, random_ids_exclude=np.ones(V, bool))
