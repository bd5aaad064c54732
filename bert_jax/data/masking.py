"""Dynamic masked-LM masking: pure, vectorized NumPy with stateless randomness.

This module owns choosing which tokens of a pretraining batch the model must predict and how
they are corrupted. The online tf.data stream calls `mask_batch` on each host's batch through
`tf.numpy_function`, so everything is vectorized over the batch.

    cfg = MaskingConfig(strategy="whole_word")
    keys = example_key(seed, epoch, example_index)                       # [B] uint64
    out = mask_batch(ids, special, word_start, keys, cfg, mask_id=103, vocab_size=30522)
    out["input_ids"]        # [B, S] int32, corrupted
    out["masked_positions"] # [B, P] int32, ascending, padded with 0
    out["masked_ids"]       # [B, P] int32, original ids, padded with 0
    out["masked_weights"]   # [B, P] float32, 1 real / 0 padding

Randomness. Every random number is a counter-based hash (splitmix64) of (example key, purpose,
counter), so an example's mask depends only on its key and its own tokens: not on the batch it
sits in, the host, the batch size or how much padding follows it. Keys come from
`example_key(seed, epoch, index)`; the stream never carries RNG state, so resuming is free.

Budget. Candidates are the tokens that are not `special` (the table must mark PAD, CLS, SEP,
MASK, ...). An example with c candidates predicts n = min(max_predictions, max(1, round(c * rate)))
tokens (0 if c == 0), as google-research/bert does (it counts all tokens, we count candidates).

Words. A word is a candidate whose id is a `word_start` (or that follows a non-candidate) plus
the candidates after it that are not word starts, so specials always end words.

Strategies.
  token       exactly n candidates, uniformly at random.
  whole_word  words in uniformly random order; a word is accepted, all its tokens at once, when
              it still fits (running total + its length <= n) and skipped otherwise, and the
              scan goes on (google-research/bert's rule). The result is maximal: no unmasked
              word is as short as the unused budget. A word longer than n is never masked.
  span        SpanBERT / ALBERT n-gram style. 2 * max_predictions candidate spans per example,
              taken in order: candidate k draws an anchor word uniformly (with replacement)
              and a length in words L from `config.span_length_probs` (geometric(span_p)
              clipped at max_span, renormalized, as SpanBERT; or p(L) ~ 1/L for
              L <= max_ngram, as ALBERT). The span is the L words from the anchor, shifted left
              so it ends at the anchor's segment end if it would cross it (a segment is a run of
              candidates between specials), and cut to the segment if the segment has fewer than
              L words; shifting rather than cutting keeps L's distribution intact. A candidate is
              accepted if it fits the budget (skip otherwise, as whole_word) and neither overlaps
              nor touches an accepted span, so at least one visible token separates two spans and
              the span boundary tokens that SpanBERT's SBO objective reads are never masked.
              The budget is filled as far as the candidates allow (often a little under n).

Each chosen token becomes mask_id with mask_prob, a uniform random id with random_prob (never
one marked in `random_ids_exclude`), and stays as it is otherwise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bert_jax.errors import UserError

STRATEGIES = ("token", "whole_word", "span")
SPAN_DISTRIBUTIONS = ("geometric", "ngram")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    # Fraction of candidate (non-special) tokens to predict.
    rate: float = 0.15
    # Of the chosen tokens: fraction replaced by [MASK] ...
    mask_prob: float = 0.8
    # ... and fraction replaced by a random id; the rest stay unchanged.
    random_prob: float = 0.1
    # P: at most this many predictions per example; outputs are padded to it.
    max_predictions: int = 20
    # "token" | "whole_word" | "span" (see the module docstring).
    strategy: str = "token"
    # Span lengths in words: "geometric" (SpanBERT) or "ngram" (ALBERT).
    span_distribution: str = "geometric"
    # Geometric parameter p: P(L) ~ p (1 - p)^(L - 1).
    span_p: float = 0.2
    # Geometric lengths are clipped at this many words.
    max_span: int = 10
    # ALBERT n-grams: L in 1..max_ngram with P(L) ~ 1 / L.
    max_ngram: int = 3

    def __post_init__(self):
        def bad(field, expected):
            raise UserError(f"MaskingConfig.{field}={getattr(self, field)!r} is invalid; expected {expected}")

        for field in ("rate", "mask_prob", "random_prob", "span_p"):
            if isinstance(getattr(self, field), bool) or not isinstance(getattr(self, field), int | float):
                bad(field, "a number")
        for field in ("max_predictions", "max_span", "max_ngram"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(field, "an integer >= 1")
        if not 0 < self.rate <= 1:
            bad("rate", "0 < rate <= 1")
        if not 0 <= self.mask_prob <= 1:
            bad("mask_prob", "0 <= mask_prob <= 1")
        if not 0 <= self.random_prob <= 1:
            bad("random_prob", "0 <= random_prob <= 1")
        if self.mask_prob + self.random_prob > 1:
            bad("random_prob", f"mask_prob + random_prob <= 1 (mask_prob={self.mask_prob!r})")
        if self.strategy not in STRATEGIES:
            bad("strategy", f"one of {', '.join(STRATEGIES)}")
        if self.span_distribution not in SPAN_DISTRIBUTIONS:
            bad("span_distribution", f"one of {', '.join(SPAN_DISTRIBUTIONS)}")
        if not 0 < self.span_p <= 1:
            bad("span_p", "0 < span_p <= 1")

    @property
    def span_length_probs(self) -> np.ndarray:
        """P(L) for span lengths L = 1, 2, ... in words (index L - 1)."""
        if self.span_distribution == "geometric":
            lengths = np.arange(1, self.max_span + 1)
            p = self.span_p * (1 - self.span_p) ** (lengths - 1)
        else:
            p = 1.0 / np.arange(1, self.max_ngram + 1)
        return p / p.sum()


# ---- stateless randomness ------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
# One stream per purpose, so no two decisions about an example share random numbers.
_ORDER, _REPLACE, _SPAN = (np.uint64(c) for c in (0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection on uint64 that scrambles every bit (wraps mod 2^64)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _bits(keys: np.ndarray, stream: np.uint64, counter: np.ndarray) -> np.ndarray:
    """64 random bits per (key, counter): splitmix64 seeded by (key, stream); shapes broadcast."""
    return mix64(mix64(keys ^ stream) + (counter.astype(np.uint64) + np.uint64(1)) * _GOLDEN)


def example_key(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """The masking key of examples `index` in `epoch`: [N] uint64, distinct across indices."""
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**64:
            raise UserError(f"example_key: {name}={value!r} is invalid; expected an integer in [0, 2**64)")
    index = np.asarray(index)
    if index.dtype.kind not in "iu" or (index.dtype.kind == "i" and index.size and index.min() < 0):
        raise UserError(f"example_key: index must be non-negative integers, got {index.dtype} {index!r}")
    # Each step is a bijection, so for a given (seed, epoch) distinct indices get distinct keys.
    h = mix64(np.array([seed], np.uint64))
    h = mix64(h + np.array([epoch], np.uint64) * _GOLDEN)  # arrays: uint64 products wrap silently
    return mix64(h + index.astype(np.uint64) * _GOLDEN)


def _unit(bits: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) from the top 32 bits (exact, so comparisons are portable)."""
    return (bits >> np.uint64(32)).astype(np.float64) * 2.0**-32


def _below(bits: np.ndarray, n) -> np.ndarray:
    """Uniform integer in [0, n) from the low 32 bits (n < 2^32)."""
    return ((bits & np.uint64(0xFFFFFFFF)) * np.asarray(n, np.uint64)) >> np.uint64(32)


# ---- choosing positions ---------------------------------------------------------------------

# Sort keys pack (random score | start position | word length) into one non-negative int64, so
# a single value sort orders the words and carries their position and length along; the position
# also breaks ties, making the order a strict permutation. int64 sorts ~2x faster than uint64.
_LEN_BITS = 14
_FIELD = (1 << _LEN_BITS) - 1
MAX_SEQ_LEN = _FIELD - 1  # positions and lengths fit the packing; non-words (all ones) never fit


def _words(cand: np.ndarray, is_start: np.ndarray):
    """Word starts [B, S] bool and, at each start, the word's length in tokens [B, S]."""
    batch, seq = cand.shape
    prev = np.zeros_like(cand)
    prev[:, 1:] = cand[:, :-1]
    start = cand & (is_start | ~prev)
    # A word runs up to the next start or non-candidate: find it by a reversed running minimum.
    pos = np.arange(seq, dtype=np.int32)
    boundary = np.where(start | ~cand, pos, seq)
    nxt = np.full((batch, seq + 1), seq, np.int32)
    nxt[:, :-1] = np.minimum.accumulate(boundary[:, ::-1], axis=1)[:, ::-1]
    return start, nxt[:, 1:] - pos


def _choose_words(start, length, keys, n):
    """Greedy whole-word choice in random order with google-research's skip rule -> chosen starts."""
    batch, seq = start.shape
    pos = np.arange(seq, dtype=np.int64)
    score = (_bits(keys[:, None], _ORDER, pos) >> np.uint64(2 * _LEN_BITS + 1)).astype(np.int64)  # 35 bits
    packed = np.where(start, (score << 2 * _LEN_BITS) | (pos << _LEN_BITS) | length, np.iinfo(np.int64).max)
    ranked = np.sort(packed, axis=1)  # [B, S]: words in random order, then non-words
    ranked_len = (ranked & _FIELD).astype(np.int32)  # non-words read as _FIELD > any n: never fit
    total = np.cumsum(ranked_len, axis=1, dtype=np.int32)
    # Phase 1: the random-order prefix that fits is accepted wholesale.
    k0 = (total <= n[:, None]).sum(axis=1)
    last = np.maximum(k0 - 1, 0)
    rows = np.arange(batch)
    threshold = np.where(k0 > 0, ranked[rows, last], -1)
    chosen = start & (packed <= threshold[:, None])
    room = n - np.where(k0 > 0, total[rows, last], 0)
    # Phase 2: after the first word that overflows, keep scanning for words that still fit.
    # Each round accepts the next fitting word in every row that has one; the budget only
    # shrinks, so a word skipped once never fits later, and rounds are at most n.
    cols = np.arange(seq)
    live = np.flatnonzero(room > 0)
    after = k0  # per row: the last ranked index examined (k0 itself overflowed)
    while live.size:
        fits = (ranked_len[live] <= room[live, None]) & (cols > after[live, None])
        has = fits.any(axis=1)
        live, fits = live[has], fits[has]
        j = fits.argmax(axis=1)
        chosen[live, (ranked[live, j] >> _LEN_BITS) & _FIELD] = True
        room[live] -= ranked_len[live, j]
        after[live] = j
        live = live[room[live] > 0]
    return chosen


def _span_draws(keys, num_words, config):
    """Candidate spans [B, K]: anchor word index (uniform in [0, num_words)) and length in words."""
    bits = _bits(keys[:, None], _SPAN, np.arange(2 * config.max_predictions))
    anchor = _below(bits >> np.uint64(32), num_words[:, None]).astype(np.int32)
    cdf = np.cumsum(config.span_length_probs)
    length = np.searchsorted(cdf, _unit(bits << np.uint64(32)), side="right") + 1
    return anchor, np.minimum(length, len(cdf))  # the min guards cdf[-1] rounding below 1


def _choose_spans(start, length, cand, keys, n, config):
    """Greedy span choice (see the module docstring) -> [B, S] bool chosen tokens."""
    batch, seq = start.shape
    rows, cols = np.nonzero(start)
    word_index = np.cumsum(start, axis=1, dtype=np.int32) - 1  # [B, S] word of each token
    # Segment of each token: first / last word index of its run of candidates.
    pos = np.arange(seq, dtype=np.int32)
    prev = np.zeros_like(cand)
    prev[:, 1:] = cand[:, :-1]
    first_tok = np.maximum.accumulate(np.where(cand & ~prev, pos, 0), axis=1)
    end_tok = np.minimum.accumulate(np.where(cand, seq, pos)[:, ::-1], axis=1)[:, ::-1]  # next non-candidate
    last_tok = np.maximum(end_tok - 1, 0)
    # Word-indexed tables [B, S]: start token, end token (exclusive), segment's first/last word.
    w = word_index[rows, cols]
    word_pos, word_end, seg_first, seg_last = (np.zeros((batch, seq), np.int32) for _ in range(4))
    word_pos[rows, w] = cols
    word_end[rows, w] = cols + length[rows, cols]
    seg_first[rows, w] = word_index[rows, first_tok[rows, cols]]
    seg_last[rows, w] = word_index[rows, last_tok[rows, cols]]

    num_words = start.sum(axis=1)
    anchor, span_len = _span_draws(keys, num_words, config)  # [B, K]
    num_cands = anchor.shape[1]
    r = np.arange(batch)[:, None]
    first, last = seg_first[r, anchor], seg_last[r, anchor]
    lo_word = np.maximum(first, np.minimum(anchor, last - span_len + 1))
    hi_word = np.minimum(last, lo_word + span_len - 1)
    lo, hi = word_pos[r, lo_word], word_end[r, hi_word]  # [B, K] token range [lo, hi)
    size = np.where(num_words[:, None] > 0, hi - lo, seq + 1)

    # Accepted token ranges so far; empty slots can never clash.
    acc_lo = np.full((batch, num_cands), seq + 2, np.int32)
    acc_hi = np.full((batch, num_cands), -2, np.int32)
    used = np.zeros(batch, np.int64)
    for k in range(num_cands):
        s, e = lo[:, k], hi[:, k]
        clash = ((s[:, None] <= acc_hi[:, :k]) & (acc_lo[:, :k] <= e[:, None])).any(axis=1)  # overlap/touch
        ok = ~clash & (used + size[:, k] <= n)
        acc_lo[:, k] = np.where(ok, s, seq + 2)
        acc_hi[:, k] = np.where(ok, e, -2)
        used += size[:, k] * ok
    # Accepted spans are disjoint and never touch, so their +1 / -1 edge marks never collide.
    ok_r, ok_k = np.nonzero(acc_hi >= 0)
    edge = np.zeros((batch, seq + 1), np.int8)
    edge[ok_r, acc_lo[ok_r, ok_k]] = 1
    edge[ok_r, acc_hi[ok_r, ok_k]] = -1
    return np.cumsum(edge[:, :seq], axis=1, dtype=np.int8) > 0


def _check_table(name, table, min_len):
    table = np.asarray(table)
    if table.ndim != 1 or table.dtype != bool or len(table) < min_len:
        raise UserError(
            f"mask_batch: {name} must be a 1-D bool table of length >= {min_len}, "
            f"got {table.dtype} {table.shape}"
        )
    return table


def mask_batch(
    input_ids: np.ndarray,
    special: np.ndarray,
    word_start: np.ndarray,
    example_keys: np.ndarray,
    config: MaskingConfig,
    mask_id: int,
    vocab_size: int,
    random_ids_exclude: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Mask a padded batch [B, S]; see the module docstring for the semantics.

    special: [>= vocab] bool, ids never masked (must include PAD). word_start: [>= vocab] bool,
    ids that begin a word (unused by strategy="token"). example_keys: [B] uint64 (other integer
    dtypes are reinterpreted as uint64). random_ids_exclude: optional [>= vocab] bool, ids never
    drawn as random replacements.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise UserError(f"mask_batch: input_ids must be a 2-D integer array, got {ids.dtype} {ids.shape}")
    batch, seq = ids.shape
    if seq > MAX_SEQ_LEN:
        raise UserError(f"mask_batch: sequence length {seq} exceeds {MAX_SEQ_LEN}")
    if not 0 <= mask_id < vocab_size:
        raise UserError(f"mask_batch: mask_id={mask_id} must be in [0, vocab_size={vocab_size})")
    special = _check_table("special", special, vocab_size)
    word_start = _check_table("word_start", word_start, vocab_size)
    keys = np.asarray(example_keys)
    if keys.shape != (batch,) or keys.dtype.kind not in "iu":
        raise UserError(f"mask_batch: example_keys must be [{batch}] integers, got {keys.dtype} {keys.shape}")
    keys = keys.astype(np.uint64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise UserError(
            f"mask_batch: input_ids must lie in [0, vocab_size={vocab_size}), got [{ids.min()}, {ids.max()}]"
        )
    if random_ids_exclude is None:
        allowed = None
    else:
        exclude = _check_table("random_ids_exclude", random_ids_exclude, vocab_size)
        allowed = np.flatnonzero(~exclude[:vocab_size]).astype(np.int32)
        if allowed.size == 0:
            raise UserError("mask_batch: random_ids_exclude excludes every id; nothing left to draw")

    cand = ~special[ids]
    num_cand = cand.sum(axis=1)
    n = np.minimum(config.max_predictions, np.maximum(1, np.rint(num_cand * config.rate))).astype(np.int64)
    n[num_cand == 0] = 0

    if config.strategy == "token":  # every candidate is a one-token word
        chosen = _choose_words(cand, np.ones((batch, seq), np.int64), keys, n)
    else:
        start, length = _words(cand, word_start[ids])
        if config.strategy == "whole_word":
            chosen_start = _choose_words(start, length, keys, n)
            # Spread each chosen start over its word: every token looks up its word's start.
            word_pos = np.maximum.accumulate(np.where(start, np.arange(seq), 0), axis=1)
            chosen = cand & np.take_along_axis(chosen_start, word_pos, axis=1)
        else:
            chosen = _choose_spans(start, length, cand, keys, n, config)

    # Pack the chosen positions left, ascending; every row has at most n <= P of them.
    rows, cols = np.nonzero(chosen)
    slot = np.cumsum(chosen, axis=1, dtype=np.int32)[rows, cols] - 1
    p = config.max_predictions
    positions = np.zeros((batch, p), np.int32)
    masked_ids = np.zeros((batch, p), np.int32)
    weights = np.zeros((batch, p), np.float32)
    original = ids[rows, cols]
    positions[rows, slot] = cols
    masked_ids[rows, slot] = original
    weights[rows, slot] = 1.0

    # 80/10/10: the top 32 bits pick the action, the low 32 bits the random id.
    bits = _bits(keys[rows], _REPLACE, cols)
    u = _unit(bits)
    if allowed is None:
        random_id = _below(bits, vocab_size).astype(np.int32)
    else:
        random_id = allowed[_below(bits, allowed.size).astype(np.int64)]
    new = np.where(
        u < config.mask_prob,
        mask_id,
        np.where(u < config.mask_prob + config.random_prob, random_id, original),
    )
    out_ids = ids.astype(np.int32)  # a copy: the caller's batch is never modified
    out_ids[rows, cols] = new
    return {
        "input_ids": out_ids,
        "masked_positions": positions,
        "masked_ids": masked_ids,
        "masked_weights": weights,
    }
