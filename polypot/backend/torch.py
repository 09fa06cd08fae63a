"""PyTorch backend: array-api-compat's torch namespace and ``torch.autograd``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import array_api_compat.torch as tnp
import numpy as np
import torch

from .base import map_params


class TorchBackend:
    name = "torch"
    has_autodiff = True

    def __init__(self, device: str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self._create_graph = False  # True inside value_and_grad: forces stay differentiable

    def namespace(self) -> Any:
        return tnp

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if isinstance(x, torch.Tensor):
            return x if dtype is None else x.to(dtype)
        return torch.as_tensor(np.asarray(x, dtype=dtype), device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def convert_params(self, params: Any) -> Any:
        return map_params(params, lambda a: torch.as_tensor(np.asarray(a), device=self.device))

    def scatter_sum(self, data: Any, index: Any, size: int) -> Any:
        nf, _, k = data.shape
        out = torch.zeros((nf, size, k), dtype=data.dtype, device=data.device)
        idx = index.to(torch.int64)[:, :, None].expand(-1, -1, k)
        return out.scatter_add(1, idx, data)

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any, create_graph: bool = False
                           ) -> tuple[Any, Callable[[Any], Any]]:
        create_graph = create_graph or self._create_graph
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            y = fn(x)

        def pullback(cotangent: Any) -> Any:
            (g,) = torch.autograd.grad(y, x, grad_outputs=cotangent, retain_graph=True,
                                       create_graph=create_graph)
            return g

        return y, pullback

    def value_and_grad(self, fn: Callable[[Any], tuple[Any, dict]], params: dict
                       ) -> tuple[Any, dict, dict]:
        """(loss, aux, grads) of ``fn: params -> (scalar loss, aux dict)``; ``params`` is a flat
        dict of tensors. Pullbacks taken inside ``fn`` (forces) are differentiable."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self._create_graph = True
        try:
            with torch.enable_grad():
                loss, aux = fn(leaves)
                grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        finally:
            self._create_graph = False
        grads = {k: torch.zeros_like(v) if g is None else g
                 for (k, v), g in zip(leaves.items(), grads, strict=True)}
        loss, aux = loss.detach(), {k: v.detach() for k, v in aux.items()}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            loss, aux, grads = _average_over_ranks(loss, aux, grads)
        return loss, aux, grads

    def distributed(self) -> tuple[int, int]:
        """(rank, world size); joins the gloo process group when launched by ``torchrun``
        (``WORLD_SIZE`` > 1). Each rank then takes its share of every global batch and
        ``value_and_grad`` averages gradients over the ranks."""
        dist = torch.distributed
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def end_distributed(self, completed: bool) -> None:
        """Leave the process group joined by :meth:`distributed`. After a completed run the ranks
        first wait for each other (rank 0 may still be writing its last checkpoint); a rank that
        exits with gloo's threads still running aborts ("terminate called without an active
        exception")."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            if completed:
                dist.barrier()
            dist.destroy_process_group()

    def compile_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """Training steps run eagerly (autograd through the force needs double backward)."""
        return step

    def hessian(self, fn: Callable[[Any], Any], x: Any) -> Any:
        """Per-frame Hessians (nf, 3n, 3n) of ``fn: x (nf, n, 3) -> energies (nf,)``.

        Frames are independent, so d/dx of sum_f g_f[a, k] gives row (a, k) of every frame's
        Hessian: one double-backward pass per coordinate (3n in all)."""
        nf, n, _ = x.shape
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
            g = g.reshape(nf, 3 * n)
            rows = [torch.autograd.grad(g[:, c].sum(), x, retain_graph=True)[0].reshape(nf, -1)
                    for c in range(3 * n)]
        return torch.stack(rows, dim=1).detach()


# ---- frozen files (.pth, .pt2) -------------------------------------------------------------------
def _average_over_ranks(loss: Any, aux: dict, grads: dict) -> tuple[Any, dict, dict]:
    """Mean over ranks of the loss, the squared metrics (rmse values) and the gradients, in
    one all-reduce of a flat buffer. Equal shares of one global batch make these the loss and
    gradient of the whole batch."""
    dist = torch.distributed
    world = dist.get_world_size()
    parts = [loss.reshape(1)] + [v.reshape(1) ** 2 for v in aux.values()] \
        + [g.reshape(-1) for g in grads.values()]
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    flat = flat / world
    loss = flat[0]
    aux = {k: torch.sqrt(flat[1 + i]) for i, k in enumerate(aux)}
    out, at = {}, 1 + len(aux)
    for k, g in grads.items():
        out[k] = flat[at:at + g.numel()].reshape(g.shape)
        at += g.numel()
    return loss, aux, out


def freeze(model: Any, params: Any, path: str | os.PathLike,
           model_def_script: dict | None = None) -> None:
    """Write ``model`` as a ``.pth`` (torch.export) or ``.pt2`` (AOTInductor) frozen file (see
    :mod:`polypot.backend.torch_frozen`)."""
    from .torch_frozen import freeze as _freeze

    _freeze(model, params, path, model_def_script=model_def_script)


def load_frozen(path: str | os.PathLike) -> Any:
    """Load a ``.pth`` / ``.pt2`` file as a ``FrozenModel``; imports no ``polypot.model`` code."""
    from .torch_frozen import load_frozen as _load

    return _load(path)
