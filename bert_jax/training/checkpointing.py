"""Checkpoints: the ONLY module of bert_jax that imports Orbax.

A checkpoint is one Orbax step directory `<workdir>/checkpoints/<step>` holding two items:
`state` (a pytree of jax.Arrays: params, optimizer state, rng key data, step; any sharding)
and `extra` (JSON: data-stream state, config, model identity, metrics). Saves are async,
the newest `keep` are kept, and a restore places arrays on whatever mesh the caller asks
for, which need not be the one they were saved from.

Integrity: Orbax stores raw (zstd) chunks with no checksum, so a flipped byte on disk
restores as a silently wrong value. Every save records a 32-bit fingerprint of each array
leaf in `extra`; every restore recomputes them on device and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from bert_jax import storage
from bert_jax.errors import UserError

# Keys in the stored JSON item under which the fingerprints of the arrays and of the JSON
# item itself live; stripped on the way out.
FINGERPRINTS_KEY = "_fingerprints"
EXTRA_DIGEST_KEY = "_extra_sha256"


class DamagedCheckpoint(UserError):
    """A step whose files are missing, truncated or altered. `step` names it."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def _extra_digest(extra: dict) -> str:
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()


_MAX_LISTED = 20  # leaves named per problem kind in an error; the rest are counted


# ---------------------------------------------------------------- leaf names and fingerprints


def _path_str(path) -> str:
    """'params/layers/0/kernel': the same name whether a level is a dict, list or attribute,
    so paths from Orbax metadata (plain dicts) match paths from the caller's tree."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _named_leaves(tree) -> list[tuple[str, Any]]:
    return [(_path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _checksum(x: jax.Array) -> jax.Array:
    """uint32 sum of bits * odd position weight, wrapping mod 2**32. Integer addition is
    associative, so the result is exact and the same on any mesh; an odd weight makes any
    change to a single element change the sum."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = x.dtype.itemsize
    if size in (4, 8):  # 8-byte dtypes bitcast to [..., 2] uint32 words
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    else:
        bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(jnp.uint32)
    # Flat row-major index built from per-dimension iotas: no reshape, so no resharding.
    index = jnp.zeros(bits.shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(bits.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, dim) * np.uint32(stride % 2**32)
        stride *= bits.shape[dim]
    weight = (index * np.uint32(0x9E3779B1) + np.uint32(0x7F4A7C15)) | np.uint32(1)
    return jnp.sum(bits * weight, dtype=jnp.uint32)


@jax.jit
def _fingerprint_and_finite(leaves):
    # jit caches one executable per structure/shapes/shardings. Every output is 0-d, hence
    # replicated: each process can read its local copy without a gather.
    sums = [_checksum(x) for x in leaves]
    finite = [
        jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True) for x in leaves
    ]
    return sums, finite


def _inspect(named: list[tuple[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """({leaf: fingerprint}, [non-finite leaves]) with one device->host transfer."""
    for name, x in named:
        if not isinstance(x, jax.Array):
            raise UserError(f"checkpoint state leaf {name!r} is a {type(x).__name__}; expected a jax.Array")
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise UserError(
                f"checkpoint state leaf {name!r} is a typed PRNG key; "
                "store jax.random.key_data(key) (uint32) instead"
            )
        if jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype.itemsize not in (1, 2, 4, 8):
            raise UserError(f"checkpoint state leaf {name!r} has unsupported dtype {x.dtype}")
    # One jit per device set: a single jit cannot mix arrays committed to different devices.
    groups: dict[frozenset, list[int]] = {}
    for i, (_, x) in enumerate(named):
        groups.setdefault(frozenset(d.id for d in x.sharding.device_set), []).append(i)
    order, outputs = [], []
    for idx in groups.values():
        sums, finite = _fingerprint_and_finite([named[i][1] for i in idx])
        order += idx
        outputs += [(s.addressable_data(0), f.addressable_data(0)) for s, f in zip(sums, finite, strict=True)]
    fetched = jax.device_get(outputs)
    prints, bad = {}, []
    for i, (s, f) in sorted(zip(order, fetched, strict=True)):
        prints[named[i][0]] = int(s)
        if not f:
            bad.append(named[i][0])
    return prints, bad


def _listing(names: list[str]) -> str:
    more = f", ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


# ---------------------------------------------------------------- the checkpointer


_UNSET = object()
_replica_parallel: object = _UNSET  # what the registered jax.Array handler was made with


def _use_replica_parallel(on: bool | None) -> None:
    """Register Orbax's jax.Array handler with replica-parallel saving `on` (None: Orbax's
    own default, off on GPU), once per value: Orbax keeps one global handler per type and
    logs each override."""
    global _replica_parallel
    if _replica_parallel is not on:
        absl_logger = logging.getLogger("absl")
        was, absl_logger.disabled = absl_logger.disabled, True
        try:
            ocp.type_handlers.register_type_handler(
                jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=on), override=True
            )
        finally:
            absl_logger.disabled = was
        _replica_parallel = on


class Checkpointer:
    """Async, keep-N checkpoints of (state, extra) under `<workdir>/checkpoints`.

    Multi-process: every process constructs it and calls save/restore with the same steps
    (Orbax synchronises them; process 0 writes the metadata).
    """

    def __init__(
        self,
        workdir: str,
        *,
        save_every: int = 1,
        keep: int = 3,
        async_save: bool = True,
        read_only: bool = False,
    ):
        """`read_only`: for readers (encode, export, evaluate, fine-tuning's --init). Nothing
        under the workdir is created, deleted or renamed: a run writing there may be mid-way
        through an async save, whose `*.orbax-checkpoint-tmp-*` directory must survive. A
        workdir without `checkpoints/` is an error."""
        if save_every < 1 or keep < 1:
            raise UserError(f"checkpointing needs save_every >= 1 and keep >= 1; got {save_every=}, {keep=}")
        workdir = storage.absolute(workdir)  # Orbax wants local paths absolute; gs:// stays
        self.directory = f"{workdir.rstrip('/')}/checkpoints"
        if read_only and not epath.Path(self.directory).is_dir():
            what = "does not exist" if not epath.Path(workdir).exists() else "has no checkpoints/"
            raise UserError(
                f"{workdir} {what}; expected a workdir written by bert-jax pretrain, finetune or import"
            )
        # Orbax's replica-parallel save splits each replicated array across its replicas so
        # that every host writes a part. With one process every replica is on this host, so
        # it only costs a slice program compiled per device and shape at the first save
        # (about 8 s for bert-tiny on 8 CPU devices); single-replica writes the same files.
        # Several processes keep Orbax's default.
        _use_replica_parallel(False if jax.process_count() == 1 else None)
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for args, handler in (
            (ocp.args.StandardSave, ocp.StandardCheckpointHandler),
            (ocp.args.StandardRestore, ocp.StandardCheckpointHandler),
        ):
            registry.add("state", args, handler)
        for args in (ocp.args.JsonSave, ocp.args.JsonRestore):
            registry.add("extra", args, ocp.JsonCheckpointHandler)
        policies = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            # Orbax's default policy also saves the first step it sees; we want exactly
            # every `save_every` steps (plus preemption saves when jax.distributed signals one).
            save_decision_policy=policies.AnySavePolicy(
                [policies.FixedIntervalPolicy(save_every), policies.PreemptionCheckpointingPolicy()]
            ),
            enable_async_checkpointing=async_save,
            # A save killed mid-write leaves `<step>.orbax-checkpoint-tmp-*`; Orbax never lists
            # it as a step, and the writer removes it at start-up. Readers leave it alone.
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
        )
        self._open = lambda: ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)
        self._manager = self._open()
        self._last_saved: int | None = None

    def _after_own_save(self) -> None:
        """Before reading what this manager saved on cloud storage: Orbax writes items there in
        place (no tmp dir to rename) and its handlers then take them for temporary items
        ("call finalize() before metadata()"), so read through a fresh manager once every
        process has finished saving."""
        if self._last_saved is None or not storage.is_remote(self.directory):
            return
        self._manager.wait_until_finished()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("bert_jax-checkpoint-reopen")
        self._manager.close()
        self._manager = self._open()
        self._last_saved = None

    # -- which steps exist

    def all_steps(self) -> list[int]:
        """Complete checkpoints, oldest first. Orbax lists a step as soon as its async save
        starts; until that save is finalised (renamed from its tmp dir) it is left out here."""
        steps = sorted(self._manager.all_steps())
        if self._last_saved in steps and self._manager.is_saving_in_progress():
            steps.remove(self._last_saved)
        return steps

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        return self._manager.should_save(step)

    def _step_dir(self, step: int) -> str:
        return f"{self.directory}/{step}"

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise UserError(f"no complete checkpoint in {self.directory}")
            return steps[-1]
        if step not in steps:
            raise UserError(
                f"no complete checkpoint for step {step} in {self.directory}; "
                f"available steps: {steps or 'none'}"
            )
        return step

    # -- save

    def save(self, step: int, state, extra: dict, *, force: bool = False) -> bool:
        """Start saving (state, extra) at `step`; True if a save was started. Returns once
        the arrays are copied off the device, so the caller may donate `state` next."""
        if not force and not self.should_save(step):
            return False
        if step in self._manager.all_steps():  # only reachable with force=True
            raise UserError(f"a checkpoint for step {step} already exists in {self.directory}")
        if FINGERPRINTS_KEY in extra or EXTRA_DIGEST_KEY in extra:
            raise UserError(
                f"checkpoint extra must not contain the reserved keys {FINGERPRINTS_KEY!r}, "
                f"{EXTRA_DIGEST_KEY!r}"
            )
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise UserError(f"checkpoint extra for step {step} is not plain JSON: {e}") from e
        prints, bad = _inspect(_named_leaves(state))
        if bad:  # checked before Orbax is called, so nothing at all is written
            raise UserError(
                f"refusing to save step {step} to {self.directory}: non-finite values in {_listing(bad)}"
            )
        saved = self._manager.save(
            step,
            force=force,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                extra=ocp.args.JsonSave(
                    {
                        **extra,
                        FINGERPRINTS_KEY: prints,
                        EXTRA_DIGEST_KEY: _extra_digest({**extra, FINGERPRINTS_KEY: prints}),
                    }
                ),
            ),
        )
        if saved:
            self._last_saved = step
        return saved

    # -- restore

    def read_extra(self, step: int | None = None) -> dict:
        """The JSON item alone: cheap, for checking config and model identity before
        building any state."""
        self._after_own_save()
        return self._read_extra(self._resolve(step))[0]

    def _damaged(self, step: int, what: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(f"checkpoint step {step} ({self._step_dir(step)}) is damaged: {what}", step)

    def _orbax(self, step: int, what: str, fn):
        """Call Orbax on `step`; any failure of its files becomes one DamagedCheckpoint line."""
        try:
            return fn()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - TensorStore/Orbax/JSON errors of every kind
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise self._damaged(step, f"{what} cannot be read ({type(e).__name__}: {reason})") from None

    def _read_extra(self, step: int) -> tuple[dict, dict[str, int] | None]:
        stored = self._orbax(
            step,
            "its JSON item (extra)",
            lambda: self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))[
                "extra"
            ],
        )
        if not isinstance(stored, dict):
            raise self._damaged(step, f"its JSON item (extra) holds {type(stored).__name__}, not an object")
        stored = dict(stored)
        digest = stored.pop(EXTRA_DIGEST_KEY, None)
        if digest is not None and digest != _extra_digest(stored):  # None: written before the digest
            raise self._damaged(
                step,
                "its JSON item (extra) does not match the digest recorded at save time (edited or corrupted)",
            )
        return stored, stored.pop(FINGERPRINTS_KEY, None)

    def restore(self, step: int | None, abstract_state) -> tuple[Any, dict]:
        """(state, extra) of `step` (None = latest), each array placed on the sharding of its
        jax.ShapeDtypeStruct in `abstract_state`; raises UserError on any mismatch."""
        self._after_own_save()
        step = self._resolve(step)
        where = self._step_dir(step)
        expected = _named_leaves(abstract_state)
        for name, leaf in expected:
            if getattr(leaf, "sharding", None) is None:
                raise UserError(
                    f"restore of {where}: abstract leaf {name!r} has no .sharding; "
                    "pass jax.ShapeDtypeStruct(shape, dtype, sharding=...) for every leaf"
                )
        self._check_structure(step, expected)
        extra, saved_prints = self._read_extra(step)
        if saved_prints is None:
            raise UserError(
                f"checkpoint {where} has no integrity fingerprints; it was not written by "
                "bert_jax.training.checkpointing"
            )
        state = self._orbax(
            step,
            "its arrays (state)",
            lambda: self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )["state"],
        )
        prints, _ = _inspect(_named_leaves(state))
        corrupt = sorted(n for n, v in prints.items() if saved_prints.get(n) != v)
        if corrupt:
            raise self._damaged(
                step,
                f"restored values of {_listing(corrupt)} do not match the "
                "fingerprints recorded at save time; restore an earlier step",
            )
        return state, extra

    def _check_structure(self, step: int, expected: list[tuple[str, Any]]) -> None:
        """Compare leaf paths, shapes and dtypes with the saved metadata before reading any
        array, so a different model fails with a list of differences, not an Orbax trace."""
        metadata = self._orbax(
            step, "its array metadata (state/_METADATA)", lambda: self._manager.item_metadata(step)["state"]
        )
        if metadata is None:
            raise self._damaged(step, "its array metadata (state/_METADATA) is missing")
        saved = {n: m for n, m in _named_leaves(getattr(metadata, "tree", metadata))}
        want = dict(expected)
        missing = sorted(set(want) - set(saved))
        unexpected = sorted(set(saved) - set(want))
        misshaped = []
        for name in sorted(set(want) & set(saved)):
            s, w = saved[name], want[name]
            if tuple(s.shape) != tuple(w.shape) or np.dtype(s.dtype) != np.dtype(w.dtype):
                misshaped.append(
                    f"{name} (saved {tuple(s.shape)} {np.dtype(s.dtype)} vs expected "
                    f"{tuple(w.shape)} {np.dtype(w.dtype)})"
                )
        problems = []
        if missing:
            problems.append(f"missing from the checkpoint: {_listing(missing)}")
        if unexpected:
            problems.append(f"in the checkpoint but not expected: {_listing(unexpected)}")
        if misshaped:
            problems.append(f"different shape/dtype: {_listing(misshaped)}")
        if problems:
            raise UserError(
                f"checkpoint {self._step_dir(step)} does not match the expected state "
                f"(is it a different model?): " + "; ".join(problems)
            )

    def set_aside(self, step: int) -> str:
        """Rename a damaged step to `<step>.damaged-<time>` (kept for inspection, never listed
        again); the writer calls this once it has an intact earlier step to resume from."""
        import time

        from jax.experimental import multihost_utils

        target = f"{self._step_dir(step)}.damaged-{int(time.time())}"
        if jax.process_index() == 0:
            epath.Path(self._step_dir(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"bert_jax set aside step {step}")
        self._manager.reload()
        return target

    def delete(self, step: int) -> None:
        """Remove a complete step (e.g. a best checkpoint newer than the state a run resumes
        from: the run writes it again)."""
        self._manager.delete(step)

    # -- lifecycle

    def wait(self) -> None:
        """Block until every started save is durable (renamed into place); re-raises its error."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
