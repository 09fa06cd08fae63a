"""DeePMD-kit's ``ener`` loss: energy, force, virial and atomic-energy mean squared errors.

Prefactors move linearly in the learning rate from ``start_pref_*`` (at start_lr) to
``limit_pref_*`` (as lr -> 0). Energy and virial terms are scaled by 1/natoms as DeePMD-kit does;
``rmse_e`` and ``rmse_v`` are reported per atom. A term is used only when its label is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EnergyLoss:
    start_lr: float
    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0
    start_pref_ae: float = 0.0
    limit_pref_ae: float = 0.0

    @classmethod
    def from_config(cls, cfg: dict, start_lr: float) -> EnergyLoss:
        keys = ("start_pref_e", "limit_pref_e", "start_pref_f", "limit_pref_f",
                "start_pref_v", "limit_pref_v", "start_pref_ae", "limit_pref_ae")
        return cls(start_lr=float(start_lr), **{k: float(cfg[k]) for k in keys if k in cfg})

    def prefactors(self, lr: float) -> dict[str, float]:
        """Prefactor of each term at learning rate ``lr``."""
        c = lr / self.start_lr
        return {
            "e": self.limit_pref_e + (self.start_pref_e - self.limit_pref_e) * c,
            "f": self.limit_pref_f + (self.start_pref_f - self.limit_pref_f) * c,
            "v": self.limit_pref_v + (self.start_pref_v - self.limit_pref_v) * c,
            "ae": self.limit_pref_ae + (self.start_pref_ae - self.limit_pref_ae) * c,
        }

    def terms(self) -> tuple[str, ...]:
        """Labels this loss needs (those with a non-zero prefactor somewhere)."""
        names = {"e": "energy", "f": "force", "v": "virial", "ae": "atom_ener"}
        return tuple(names[t] for t in ("e", "f", "v", "ae")
                     if getattr(self, f"start_pref_{t}") or getattr(self, f"limit_pref_{t}"))

    def __call__(self, xp: Any, pred: dict, label: dict, pref: dict, natoms: int
                 ) -> tuple[Any, dict]:
        """(loss, metrics) for one batch.

        pred: energy (nb, 1), force (nb, natoms, 3), virial (nb, 9), atom_energy (nb, natoms, 1).
        label: the same keys as DeePMD-kit names them (energy (nb,), force, virial (nb, 9),
        atom_ener (nb, natoms)); absent labels are skipped. pref: scalars from
        :meth:`prefactors` (may be backend scalars, so one compiled step serves every lr).
        """
        norm = 1.0 / natoms
        key = {"energy": "energy", "force": "force", "virial": "virial",
               "atom_ener": "atom_energy"}
        label = {k: xp.astype(v, pred[key[k]].dtype) for k, v in label.items()}
        loss = 0.0
        metrics = {}
        if "energy" in label:
            d = pred["energy"][:, 0] - label["energy"]
            l2 = xp.mean(d * d)
            loss = loss + norm * pref["e"] * l2
            metrics["rmse_e"] = xp.sqrt(l2) * norm
        if "force" in label:
            d = pred["force"] - label["force"]
            l2 = xp.mean(d * d)
            loss = loss + pref["f"] * l2
            metrics["rmse_f"] = xp.sqrt(l2)
        if "virial" in label:
            d = pred["virial"] - label["virial"]
            l2 = xp.mean(d * d)
            loss = loss + norm * pref["v"] * l2
            metrics["rmse_v"] = xp.sqrt(l2) * norm
        if "atom_ener" in label:
            d = pred["atom_energy"][:, :, 0] - label["atom_ener"]
            l2 = xp.mean(d * d)
            loss = loss + pref["ae"] * l2
            metrics["rmse_ae"] = xp.sqrt(l2)
        metrics["rmse"] = xp.sqrt(loss)
        return loss, metrics
