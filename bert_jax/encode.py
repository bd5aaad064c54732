"""`bert-jax encode`: text lines in, hidden states or pooled sentence vectors out (.npy).

Lines are tokenized with the checkpoint's WordPiece vocabulary ([CLS] text [SEP]),
batched into a few fixed shapes (so XLA compiles a handful of programs, not one per
batch), run through the encoder, and pooled on device:
  none  -> [lines, max_length, hidden], zeros past each line's last token
  cls   -> [lines, hidden], the [CLS] token's last hidden state
  mean  -> [lines, hidden], the mean over the line's tokens (sentence-transformers' pooling)
"""

from __future__ import annotations

import io
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax import storage
from bert_jax.convert import hf
from bert_jax.data.tokenizers import WordPieceTokenizer
from bert_jax.errors import UserError

POOLINGS = ("cls", "mean", "none")


def read_lines(path: str) -> list[str]:
    """The file's lines, decoded as UTF-8; a line that is not UTF-8 is an error naming it."""
    if storage.isdir(path):
        raise UserError(f"input {path} is a directory, expected a text file")
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError:
        raise UserError(f"input file {path} does not exist") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's final newline ends the last line; it does not start one
    if not lines:
        raise UserError(f"input file {path} is empty; expected one text per line")
    texts = []
    for number, line in enumerate(lines, 1):
        try:
            texts.append(line.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UserError(
                f"{path}:{number}: line is not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None
    return texts


def load_checkpoint(path: str):
    """(model, tokenizer) from a checkpoint directory: a Hugging Face checkpoint, or one of
    our pretraining workdirs (its latest checkpoint; ELECTRA: the discriminator)."""
    if storage.isdir(storage.join(path, "checkpoints")):
        return _load_workdir(path)
    path = storage.fetch(path)  # transformers-style files are read locally
    ckpt = hf.load(path)
    if "vocab.txt" not in ckpt.tokenizer_files:
        raise UserError(
            f"{path}: no vocab.txt; encode needs the checkpoint's WordPiece "
            f"vocabulary (found tokenizer files: "
            f"{', '.join(ckpt.tokenizer_files) or 'none'})"
        )
    return ckpt.model(), WordPieceTokenizer.from_dir(path)


def _load_workdir(workdir: str):
    from bert_jax.data.prepare import read_metadata
    from bert_jax.data.tokenizers import load_tokenizer
    from bert_jax.models import model as model_lib
    from bert_jax.training.pretrain import load_params

    enc, objective, params, extra, _ = load_params(workdir)
    encoder = params["discriminator"]["encoder"] if objective == "electra" else params["encoder"]
    model = nnx.merge(nnx.graphdef(model_lib.abstract(enc)), {"encoder": encoder})
    if objective == "imported":  # bert-jax import keeps the tokenizer beside the checkpoint
        return model, load_tokenizer(storage.join(workdir, "tokenizer"))
    data_dir = extra["config"]["data"]["dir"] or storage.join(workdir, "data")
    tokenizer = load_tokenizer(read_metadata(data_dir)["tokenizer"])
    return model, tokenizer


def _bucket(length: int, max_length: int) -> int:
    """Round a batch's longest line up to a multiple of 32 to bound the compiled shapes."""
    return min(max_length, -(-length // 32) * 32)


def encode(
    checkpoint: str,
    input_path: str,
    output_path: str,
    pooling: str = "mean",
    max_length: int | None = None,
    batch_size: int = 32,
    normalize: bool = False,
    log=print,
) -> np.ndarray:
    if pooling not in POOLINGS:
        raise UserError(f"--pooling={pooling!r}; choose one of: {', '.join(POOLINGS)}")
    if normalize and pooling == "none":
        raise UserError("--normalize applies to pooled vectors; use --pooling cls or mean")
    if batch_size < 1:
        raise UserError(f"--batch-size={batch_size}; expected a positive integer")
    out_dir = storage.parent(output_path)
    if not storage.is_remote(out_dir) and not storage.isdir(out_dir):
        raise UserError(f"output directory {out_dir} does not exist")
    texts = read_lines(input_path)
    model, tokenizer = load_checkpoint(checkpoint)
    if tokenizer.vocab_size > model.config.vocab_size:
        # An id past the embedding table would embed as NaN (jnp.take fills), not fail.
        raise UserError(
            f"{checkpoint}: its tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"only {model.config.vocab_size} embeddings; the vocabulary does not belong "
            "to this model"
        )
    limit = model.config.max_length
    max_length = max_length or min(limit, 512)
    if not 2 <= max_length <= limit:
        raise UserError(f"--max-length={max_length}; this checkpoint takes 2 to {limit} tokens")

    ids, mask, n_truncated = tokenizer.encode_batch(texts, max_length)
    if n_truncated:
        print(
            f"warning: {n_truncated} of {len(texts)} lines were longer than {max_length} "
            "tokens and were truncated",
            file=sys.stderr,
        )

    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, ids, mask):
        hidden = nnx.merge(graphdef, params)(ids, mask)["hidden"].astype(jnp.float32)
        m = mask[..., None].astype(jnp.float32)
        if pooling == "cls":
            out = hidden[:, 0]
        elif pooling == "mean":
            out = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        else:
            return hidden * m
        if normalize:
            out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out

    hidden = model.config.hidden_size
    result = np.zeros(
        (len(texts), max_length, hidden) if pooling == "none" else (len(texts), hidden), np.float32
    )
    lengths = mask.sum(1)
    for start in range(0, len(texts), batch_size):
        stop = min(start + batch_size, len(texts))
        width = _bucket(int(lengths[start:stop].max()), max_length)
        b_ids = np.zeros((batch_size, width), np.int32) + tokenizer.pad_id
        b_mask = np.zeros((batch_size, width), np.int32)
        b_ids[: stop - start] = ids[start:stop, :width]
        b_mask[: stop - start] = mask[start:stop, :width]
        out = np.asarray(forward(params, b_ids, b_mask))[: stop - start]
        if pooling == "none":
            result[start:stop, :width] = out
        else:
            result[start:stop] = out

    if not np.isfinite(result).all():
        bad = np.nonzero(~np.isfinite(result).reshape(len(texts), -1).all(1))[0]
        raise UserError(
            f"non-finite embeddings for {len(bad)} line(s) (first: line {bad[0] + 1}); "
            f"nothing was written to {output_path}"
        )
    buffer = io.BytesIO()
    np.save(buffer, result)
    storage.write_atomic(output_path, buffer.getvalue())  # whole or not at all
    log(
        f"encoded {len(texts)} lines with {checkpoint} -> {output_path} "
        f"{tuple(result.shape)} ({pooling} pooling{', L2-normalized' if normalize else ''})"
    )
    return result
