"""Adam, written once over the Array API so every backend takes the same step.

The update is PyTorch's ``torch.optim.Adam`` (what DeePMD-kit trains with):
m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Adam:
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, xp: Any, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Zero first and second moments, shaped like ``params`` (a flat dict)."""
        return {"m": {k: xp.zeros_like(v) for k, v in params.items()},
                "v": {k: xp.zeros_like(v) for k, v in params.items()}}

    def corrections(self, step: int) -> tuple[float, float]:
        """Bias corrections (1 - b1^t, sqrt(1 - b2^t)) of step number ``step`` (1-based),
        computed on the host and passed into a compiled step as scalars."""
        return 1.0 - self.beta1 ** step, math.sqrt(1.0 - self.beta2 ** step)

    def update(self, xp: Any, params: dict[str, Any], grads: dict[str, Any],
               state: dict[str, dict[str, Any]], lr: Any, c1: Any, sqrt_c2: Any
               ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """New (params, state) with learning rate ``lr`` and the step's :meth:`corrections`."""
        new_p, new_m, new_v = {}, {}, {}
        for k, p in params.items():
            g = grads[k]
            m = self.beta1 * state["m"][k] + (1.0 - self.beta1) * g
            v = self.beta2 * state["v"][k] + (1.0 - self.beta2) * (g * g)
            new_p[k] = p - (lr / c1) * m / (xp.sqrt(v) / sqrt_c2 + self.eps)
            new_m[k], new_v[k] = m, v
        return new_p, {"m": new_m, "v": new_v}
