"""DeePMD-kit's exponential learning-rate schedule (``learning_rate.type = "exp"``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpDecay:
    """lr(step) = start_lr * decay_rate ** (step // decay_steps), never below stop_lr.

    decay_rate is chosen so that lr reaches stop_lr at ``numb_steps``; a ``decay_steps`` not
    smaller than ``numb_steps`` is replaced by DeePMD-kit's default (numb_steps // 100 + 1, at
    most 100).
    """

    start_lr: float
    stop_lr: float
    decay_steps: int
    numb_steps: int

    @property
    def effective_decay_steps(self) -> int:
        if self.decay_steps < self.numb_steps:
            return self.decay_steps
        return 100 if self.numb_steps // 10 > 100 else self.numb_steps // 100 + 1

    @property
    def decay_rate(self) -> float:
        n = self.numb_steps / self.effective_decay_steps
        return math.exp(math.log(self.stop_lr / self.start_lr) / n)

    def __call__(self, step: int) -> float:
        """Learning rate used for step ``step`` (0-based)."""
        lr = self.start_lr * self.decay_rate ** (step // self.effective_decay_steps)
        return max(lr, self.stop_lr)
