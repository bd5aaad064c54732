"""The train state of both trainers: shapes, shardings, init and restore targets, never
allocated whole.

    setup = StateSetup.for_pretraining(config, enc, mesh)   # shapes first, then shardings
    state = jax.jit(setup.init, out_shardings=setup.shardings)()   # created sharded
    state, extra, step = restore_newest_intact(ckpt, step, setup.target(), say)

`params_target` is the restore target of a parameters-only checkpoint (`bert-jax import`,
fine-tuning); `graft` lays imported parameters over a fresh init.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bert_jax.errors import UserError
from bert_jax.objectives import OBJECTIVES
from bert_jax.training import checkpointing, optim, sharding
from bert_jax.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an objective's `build` may read beyond the encoder config."""

    generator_fraction: float = 0.25
    rtd_weight: float = 50.0

    @classmethod
    def of(cls, config) -> Settings:
        return cls(config.electra.generator_fraction, config.electra.rtd_weight)


class StateSetup:
    """Shapes, shardings and the initializer of a train state, without allocating it.

    `build(seed)` makes the network (pretraining: the objective's; fine-tuning: the encoder
    `enc` with a task head). The state: params, opt_state, step, rng and the non-finite counters
    of training/step.py.
    """

    def __init__(self, enc, build, tx, lr, mesh, seed: int = 0):
        self.enc, self.build, self.tx, self.lr, self.seed = enc, build, tx, lr, seed
        self.graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: build(seed)))
        self.abstract_state = jax.eval_shape(self.init)
        self.param_shardings = sharding.param_shardings(abstract_params, mesh)
        rep = sharding.replicated(mesh)
        self.shardings = {k: rep for k in self.abstract_state}
        self.shardings["params"] = self.param_shardings
        self.shardings["opt_state"] = optax.tree_map_params(
            self.tx,
            lambda _, s: s,
            self.abstract_state["opt_state"],
            self.param_shardings,
            transform_non_params=lambda _: rep,
        )

    @classmethod
    def for_pretraining(cls, config, enc, mesh) -> StateSetup:
        objective, settings = OBJECTIVES[config.objective], Settings.of(config)
        tx, lr = optim.make(config.optim, config.train.steps, stacked_layers=not enc.share_layers)
        build = lambda seed: objective.build(enc, settings, nnx.Rngs(seed))  # noqa: E731
        return cls(enc, build, tx, lr, mesh, config.train.seed)

    def init(self, seed=None, encoder=None):
        """A fresh state (seed: this setup's, or a traced one); `encoder`: parameters that
        replace the fresh encoder's (fine-tuning's pretrained encoder)."""
        seed = self.seed if seed is None else seed
        params = nnx.to_pure_dict(nnx.state(self.build(seed)))
        if encoder is not None:
            params["encoder"] = encoder
        return {
            "params": params,
            "opt_state": self.tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed)),
            **step_lib.counters(),
        }

    def target(self):
        """The abstract state with target shardings: what a restore fills in."""
        return _placed(self.abstract_state, self.shardings)


def params_target(enc, heads: tuple[str, ...], num_labels: int, mesh) -> dict:
    """The abstract {"params": ...} of a parameters-only checkpoint, placed on `mesh`."""
    from bert_jax.models import model as model_lib

    abstract = nnx.state(model_lib.abstract(enc, tuple(heads), num_labels))
    shardings = sharding.param_shardings(abstract, mesh)
    return {"params": _placed(nnx.to_pure_dict(abstract), shardings)}


def _placed(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def graft(fresh: dict, imported: dict, at: tuple[str, ...] = ()) -> dict:
    """Imported parameters over a fresh init, at the path `at` of the fresh tree (the
    objective's MODEL): what the import has, the rest (new heads, a generator) stays fresh."""
    if at:
        return {**fresh, at[0]: graft(fresh[at[0]], imported, at[1:])}
    out = dict(fresh)
    for key, value in imported.items():
        if key in fresh:
            out[key] = graft(fresh[key], value) if isinstance(value, dict) else value
    return out


def warn_damaged(error: checkpointing.DamagedCheckpoint, say) -> None:
    say(
        f"WARNING: {error}. Resuming from the newest intact step before it; the damaged step "
        "is kept beside the others as <step>.damaged-<time>."
    )


def newest_readable(ckpt, steps: list[int], say) -> tuple[int | None, dict]:
    """The newest step whose JSON item reads back intact, and that item."""
    for step in reversed(steps):
        try:
            return step, ckpt.read_extra(step)
        except checkpointing.DamagedCheckpoint as e:
            if step == steps[0]:
                raise UserError(f"{e}; and no earlier checkpoint is intact") from None
            warn_damaged(e, say)
    return None, {}


def restore_newest_intact(ckpt, step: int, target, say):
    """(state, extra, step) of the newest fully intact step at or before `step`. Damaged
    newer steps are set aside only once an intact one has been restored."""
    damaged = []
    while True:
        try:
            state, extra = ckpt.restore(step, target)
            saved_step = int(jax.device_get(state["step"].addressable_data(0)))
            if extra.get("data_state", {}).get("step") != saved_step:
                raise checkpointing.DamagedCheckpoint(
                    f"checkpoint step {step} is damaged: its data_state.step "
                    f"{extra.get('data_state', {}).get('step')!r} is not its state's step {saved_step}",
                    step,
                )
            break
        except checkpointing.DamagedCheckpoint as e:
            earlier = [s for s in ckpt.all_steps() if s < step]
            if not earlier:
                raise UserError(f"{e}; and no earlier checkpoint is intact") from None
            warn_damaged(e, say)
            damaged.append(step)
            step, _ = newest_readable(ckpt, earlier, say)
    for bad in sorted(set(damaged) | {s for s in ckpt.all_steps() if s > step}):
        ckpt.set_aside(bad)
    return state, extra, step
