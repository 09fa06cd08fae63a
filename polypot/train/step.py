"""The training step, written once: loss, gradient (backend), Adam update (Array API).

A backend supplies ``value_and_grad`` (forces inside the loss stay differentiable) and
``compile_step`` (``jax.jit``, ``tf.function``, or nothing); nothing else differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.derivatives import derive
from .loss import EnergyLoss
from .optimizer import Adam
from .params import unflatten

#: batch keys that are inputs of the model (the rest are labels)
INPUTS = ("coord", "atype", "nlist", "mapping")


def predict(backend: Any, model: Any, params: Any, batch: dict) -> dict:
    """energy, atom_energy, force and virial of a batch (the extended system)."""
    natoms = batch["nlist"].shape[1]

    def atomic_energy(x: Any) -> Any:
        return model.atomic_energy(params, x, batch["atype"], batch["nlist"], batch["mapping"])

    return derive(backend, atomic_energy, batch["coord"], batch["mapping"], natoms)


def make_steps(backend: Any, model: Any, template: Any, loss: EnergyLoss, optimizer: Adam
               ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(train_step, eval_step), compiled by the backend.

    train_step(trainable, fixed, opt_state, batch, lr, pref, c1, sqrt_c2)
        -> (trainable, opt_state, loss, metrics)   (metrics measured before the update)
    eval_step(trainable, fixed, batch, pref) -> (loss, metrics)
    All dicts are flat; ``batch`` holds INPUTS and the labels the loss uses.
    """
    xp = backend.namespace()

    def loss_of(trainable: dict, fixed: dict, batch: dict, pref: dict) -> tuple[Any, dict]:
        params = unflatten({**trainable, **fixed}, template)
        pred = predict(backend, model, params, batch)
        labels = {k: v for k, v in batch.items() if k not in INPUTS}
        return loss(xp, pred, labels, pref, batch["nlist"].shape[1])

    def train_step(trainable: dict, fixed: dict, opt_state: dict, batch: dict, lr: Any,
                   pref: dict, c1: Any, sqrt_c2: Any) -> tuple[dict, dict, Any, dict]:
        value, metrics, grads = backend.value_and_grad(
            lambda tr: loss_of(tr, fixed, batch, pref), trainable)
        trainable, opt_state = optimizer.update(xp, trainable, grads, opt_state, lr, c1, sqrt_c2)
        return trainable, opt_state, value, metrics

    def eval_step(trainable: dict, fixed: dict, batch: dict, pref: dict) -> tuple[Any, dict]:
        return loss_of(trainable, fixed, batch, pref)

    return backend.compile_step(train_step), backend.compile_step(eval_step)
