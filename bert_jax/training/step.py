"""The train step both trainers run, and the jitted evaluation step.

    step = make_train_step(graphdef, objective, tx, lr, microbatches, mesh, state_shardings)
    state, metrics = step(state, batch)      # jit: explicit shardings, state donated

`objective` is a pretraining objective (bert_jax.objectives.OBJECTIVES) or a fine-tuning one
(bert_jax.objectives.tasks): `denominators(batch)` and `loss_fn(model, batch, rng, denom)`.
The state is {params, opt_state, step, rng, nonfinite_run, nonfinite_total} (training/state.py
and the fine-tuning trainer build it). A step splits its batch into `microbatches` and sums
their gradients (exactly the whole batch's, as the denominators are whole-batch); a step whose
loss or gradient norm is not finite changes nothing but the counters (the trainer stops after
`max_nonfinite_steps` in a row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bert_jax.training import sharding


def count_nonfinite(run, total, finite, limit: int):
    """(run, total) after one step. `run` counts skipped steps in a row and is sticky once it
    reaches `limit`: a burst between two log steps is still seen at the next one, with no
    host sync in between."""
    run = jnp.where(finite & (run < limit), 0, run + (~finite).astype(jnp.int32))
    return run, total + (~finite).astype(jnp.int32)


def counters() -> dict:
    """The state's non-finite counters, at zero."""
    return {"nonfinite_run": jnp.zeros((), jnp.int32), "nonfinite_total": jnp.zeros((), jnp.int32)}


def make_train_step(
    graphdef, objective, tx, lr, microbatches: int, mesh, state_shardings, max_nonfinite_steps: int = 10
):
    batch_spec = sharding.batch_sharding(mesh)

    def loss(params, batch, rng, denom):
        return objective.loss_fn(nnx.merge(graphdef, params), batch, rng, denom)

    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def gradients(params, batch, rng, denom):
        if microbatches == 1:
            return grad_fn(params, batch, rng, denom)

        # Strided split: microbatch m takes rows m, m+M, ..., so every device keeps working
        # on its own rows.
        def split(x):
            x = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
            return jax.lax.with_sharding_constraint(x, sharding.microbatch_sharding(mesh))

        def accumulate(carry, xs):
            i, micro = xs
            (li, si), gi = grad_fn(params, micro, jax.random.fold_in(rng, i), denom)
            return jax.tree.map(jnp.add, carry, (li, si, gi)), None

        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, batch, rng, denom))
        zeros = (zeros[0][0], zeros[0][1], zeros[1])
        steps = (jnp.arange(microbatches), jax.tree.map(split, batch))
        (loss_value, sums, grads), _ = jax.lax.scan(accumulate, zeros, steps)
        return (loss_value, sums), grads

    def step(state, batch):
        denom = objective.denominators(batch)  # whole-batch normalizers: accumulation is exact
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        params = state["params"]
        (loss_value, sums), grads = gradients(params, batch, rng, denom)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm)

        def update(operands):
            grads, opt_state, params = operands
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        # A non-finite step keeps parameters and optimizer state as they were (a conditional,
        # not a select over every array: the skip costs nothing on finite steps).
        new_params, opt_state = jax.lax.cond(
            finite, update, lambda operands: (operands[2], operands[1]), (grads, state["opt_state"], params)
        )
        run, total = count_nonfinite(
            state["nonfinite_run"], state["nonfinite_total"], finite, max_nonfinite_steps
        )
        new_state = dict(
            state,
            params=new_params,
            opt_state=opt_state,
            step=state["step"] + 1,
            nonfinite_run=run,
            nonfinite_total=total,
        )
        out = dict(
            sums,
            loss=loss_value,
            grad_norm=grad_norm,
            learning_rate=lr(state["step"]),
            nonfinite_run=run,
            nonfinite_total=total,
        )
        return new_state, out

    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_spec),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(graphdef, fn, mesh, param_shardings):
    """jit of `fn(model, batch) -> dict`, its outputs replicated (pretraining: the objective's
    metric sums; fine-tuning: the head's outputs)."""

    def step(params, batch):
        return fn(nnx.merge(graphdef, params), batch)

    return jax.jit(
        step,
        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
    )


class Shapes:
    """Counts the distinct batch shapes a jitted step is called with: one compile each."""

    def __init__(self, step):
        self.step, self.seen = step, set()

    def __call__(self, state, batch):
        self.seen.add(tuple(sorted((k, v.shape) for k, v in batch.items())))
        return self.step(state, batch)
