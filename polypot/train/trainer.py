"""``polypot train``: one training loop for every autodiff backend.

The loop, data sampling, statistics, loss, schedule and Adam are backend-independent; the backend
supplies the gradient (``value_and_grad``) and compilation (``compile_step``) only. Runs with the
same input and seed therefore take the same steps on torch, jax, tensorflow and paddle.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..data.loader import Batch, DataLoader, parse_batch_size
from ..data.system import System, load_systems
from ..model.build import build_model
from .argcheck import normalize, write_normalized
from .checkpoint import (
    as_jsonable,
    checkpoint_path,
    load_checkpoint,
    prune,
    save_checkpoint,
    write_pointer,
)
from .loss import EnergyLoss
from .lr import ExpDecay
from .optimizer import Adam
from .params import flatten, split, unflatten
from .stats import energy_bias, env_mat_stats, first_batches, frame_type_counts
from .step import make_steps


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


def _resolve(systems: Any, base: Path) -> Any:
    """Absolute system paths, relative ones taken from the input file's folder (so that a
    restart from any folder finds the data; ``file.h5#/group`` keeps its group)."""
    items = [systems] if isinstance(systems, str) else list(systems)
    out = [str((base / s).resolve()) if "#" not in s else
           f"{(base / s.split('#', 1)[0]).resolve()}#{s.split('#', 1)[1]}" for s in items]
    return out[0] if isinstance(systems, str) else out


def auto_sel(max_nbor: list[int], factor: float) -> list[int]:
    """DeePMD-kit's ``sel = "auto[:factor]"``: each largest neighbour count times ``factor``,
    truncated, then rounded up to a multiple of 4."""
    return [4 * ((int(n * factor) + 3) // 4) for n in max_nbor]


def resolve_sel(cfg: dict, systems: list[System]) -> tuple[dict, float | None]:
    """The config with any ``sel: "auto[:f]"`` replaced by numbers, and the minimum pair
    distance seen (None when not computed)."""
    desc = cfg["model"]["descriptor"]
    if desc["type"] == "dpa2":  # nsel per block, given as ints (the input check says so)
        return cfg, None
    sel = desc.get("sel", "auto")
    if not isinstance(sel, str):
        return cfg, None
    from ..cli.neighbor_stat import neighbor_stat

    factor = float(sel.split(":", 1)[1]) if ":" in sel else 1.1
    rcut = float(desc["rcut"])
    if desc["type"] in ("se_e2_a", "se_a"):  # one section per neighbour type
        min_dist, max_nbor = neighbor_stat(systems, rcut, cfg["model"]["type_map"])
        new_sel: list[int] | int = auto_sel(list(max_nbor), factor)
    else:  # one mixed section: the largest number of neighbours of any type together
        one_type = [replace(s, atype=np.zeros_like(s.atype)) for s in systems]
        min_dist, max_nbor = neighbor_stat(one_type, rcut, ["any"])
        new_sel = auto_sel(list(max_nbor), factor)[0]
    desc = dict(desc, sel=new_sel)
    return dict(cfg, model=dict(cfg["model"], descriptor=desc)), float(min_dist)


def compute_statistics(model: Any, flat: dict, systems: list[System], cfg: dict,
                       batch_sizes: list[int] | None = None) -> dict:
    """``flat`` with davg/dstd and the energy bias fitted to the first ``data_stat_nbatch``
    batches of every training system (``batch_sizes``: frames per batch of each system,
    default the input's ``batch_size``)."""
    desc = model.atomic.descriptor
    nbatch = int(cfg["model"].get("data_stat_nbatch", 10))
    protect = float(cfg["model"].get("data_stat_protect", 1e-2))
    bs = cfg["training"]["training_data"]["batch_size"]
    batches = first_batches(model, systems, batch_sizes or [bs] * len(systems), nbatch)
    flat = dict(flat)
    # DPA-2 has one environment matrix per block (repinit, three-body, repformer)
    blocks = desc.stat_blocks() if hasattr(desc, "stat_blocks") else [("", desc)]
    for key, block in blocks:
        rcut = block.rcut if key else None
        davg, dstd = env_mat_stats(block, batches, protection=protect, rcut=rcut)
        prefix = f"descriptor/{key}/" if key else "descriptor/"
        dt = flat[prefix + "davg"].dtype
        flat[prefix + "davg"] = davg.astype(dt)
        flat[prefix + "dstd"] = dstd.astype(dt)
    ntypes = len(model.type_map)
    with_e = [b for b in batches if b.energy is not None]
    if with_e:
        counts = frame_type_counts(with_e, ntypes)
        energies = np.concatenate([b.energy for b in with_e])
        bias = energy_bias(counts, energies, cfg["model"]["fitting_net"].get("rcond"))
        ob = flat["out_bias"]
        flat["out_bias"] = np.zeros_like(ob)
        flat["out_bias"][0, :, 0] = bias.astype(ob.dtype)
    return flat


class Trainer:
    """Train a model from a normalised DeePMD-kit input on one backend."""

    def __init__(self, config: dict, backend: str, input_dir: str | os.PathLike = ".",
                 workdir: str | os.PathLike = ".", restart: str | os.PathLike | None = None,
                 init_model: str | os.PathLike | None = None,
                 finetune: str | os.PathLike | None = None, log: TextIO | None = None
                 ) -> None:
        from ..backend.registry import get_backend

        self.workdir = Path(workdir)
        self.log = log or sys.stdout
        self.backend = get_backend(backend)
        if not self.backend.has_autodiff or not hasattr(self.backend, "value_and_grad"):
            raise ValueError(f"backend {backend!r} cannot train (no automatic differentiation)")
        # data parallel (torchrun): every rank draws the same global batch and takes its share
        self.rank, self.world = getattr(self.backend, "distributed", lambda: (0, 1))()
        ckpt = load_checkpoint(restart) if restart else None
        if ckpt is not None:
            config = ckpt[2]["config"]
        else:
            config = normalize(config)
            tcfg = config["training"]
            for part in ("training_data", "validation_data"):
                if tcfg.get(part):
                    tcfg[part]["systems"] = _resolve(tcfg[part]["systems"], Path(input_dir))
        tcfg = config["training"]
        type_map = config["model"]["type_map"]
        self.train_systems = load_systems(tcfg["training_data"]["systems"], type_map)
        vcfg = tcfg.get("validation_data") or None
        self.valid_systems = load_systems(vcfg["systems"], type_map) if vcfg else []
        min_dist = None
        if ckpt is None:
            config, min_dist = resolve_sel(config, self.train_systems)
            if tcfg.get("seed") is None:
                config["training"]["seed"] = int(np.random.SeedSequence().entropy % 2**31)
        self.config = config
        tcfg = config["training"]
        seed = int(tcfg["seed"])
        self.model, params = build_model(config["model"], seed=seed)
        self.template = params
        lr_cfg = config["learning_rate"]
        self.schedule = ExpDecay(float(lr_cfg["start_lr"]), float(lr_cfg["stop_lr"]),
                                 int(lr_cfg["decay_steps"]), int(tcfg["numb_steps"]))
        self.loss = EnergyLoss.from_config(config["loss"], self.schedule.start_lr)
        self.optimizer = Adam()
        pow2 = bool(getattr(self.backend, "compiles_steps", False))
        self.loader = DataLoader(self.train_systems, self.global_batch_sizes(config),
                                 self.model.rcut, self.model.sel, seed=seed, pad_pow2=pow2)
        self.valid_loader = (DataLoader(self.valid_systems, vcfg["batch_size"], self.model.rcut,
                                        self.model.sel, pad_pow2=pow2) if vcfg else None)
        flat = flatten(params)
        if ckpt is not None:
            flat = self._checked(ckpt[0], flat, str(restart))
            self.start_step = int(ckpt[2]["step"])
            self.loader.load_state_dict(ckpt[2]["loader_state"])
            self.min_nbor_dist = ckpt[2].get("min_nbor_dist")
        else:
            if init_model is not None or finetune is not None:
                flat = self._from_model(init_model or finetune, flat, finetune is not None)
                if finetune is not None:  # re-fit the energy bias to the new data
                    from .change_bias import change_bias

                    nbatch = int(config["model"].get("data_stat_nbatch", 10))
                    new, bias = change_bias(self.model, unflatten(flat, params),
                                            self.train_systems, nbatch=nbatch,
                                            batch_size=tcfg["training_data"]["batch_size"])
                    flat = flatten(new)
                    print(f"fine-tuning {finetune}: energy bias re-fitted to "
                          f"{np.round(bias, 6).tolist()} eV", file=self.log)
            else:
                flat = compute_statistics(self.model, flat, self.train_systems, config,
                                          self.global_batch_sizes(config))
            self.start_step = 0
            self.min_nbor_dist = min_dist
        b = self.backend
        trainable, fixed = split(flat)
        self.trainable = {k: b.asarray(v) for k, v in trainable.items()}
        self.fixed = {k: b.asarray(v) for k, v in fixed.items()}
        xp = b.namespace()
        if ckpt is not None and ckpt[1] is not None:
            self.opt_state = {p: {k: b.asarray(ckpt[1][p][k]) for k in trainable} for p in "mv"}
        else:
            self.opt_state = self.optimizer.init(xp, self.trainable)
        self.train_step, self.eval_step = make_steps(b, self.model, self.template, self.loss,
                                                     self.optimizer)
        self.terms = self.loss.terms()
        self.coord_dtype = np.float32 if self.model.precision == "float32" else np.float64
        self.losses: list[float] = []
        self.last_checkpoint: Path | None = Path(restart) if restart else None

    def global_batch_sizes(self, config: dict) -> list[int]:
        """Frames per global batch of each training system (per-rank size x world size)."""
        bs = config["training"]["training_data"]["batch_size"]
        if isinstance(bs, list):
            return [parse_batch_size(b, s.natoms) * self.world
                    for b, s in zip(bs, self.train_systems, strict=True)]
        return [parse_batch_size(bs, s.natoms) * self.world for s in self.train_systems]

    def share(self, batch: Batch) -> Batch:
        """This rank's equal share of a global batch (the whole batch in one process)."""
        if self.world == 1:
            return batch
        nb = len(batch.frames)
        if nb % self.world:
            raise TrainingError(f"system {batch.system}: a batch of {nb} frames cannot be "
                                f"split evenly over {self.world} processes")
        part = slice(self.rank * nb // self.world, (self.rank + 1) * nb // self.world)
        nd = batch.nd
        nd = replace(nd, coord=nd.coord[part], atype=nd.atype[part], mapping=nd.mapping[part],
                     nlist=nd.nlist[part], overflow=nd.overflow[part])
        labels = {k: None if getattr(batch, k) is None else getattr(batch, k)[part]
                  for k in ("energy", "force", "virial", "atom_ener", "box")}
        return replace(batch, frames=batch.frames[part], nd=nd, **labels)

    # ---- parameters ----------------------------------------------------------------------------
    @staticmethod
    def _checked(loaded: dict, expected: dict, source: str) -> dict:
        missing = sorted(set(expected) - set(loaded))
        wrong = sorted(k for k in expected if k in loaded
                       and np.shape(loaded[k]) != np.shape(expected[k]))
        if missing or wrong:
            raise ValueError(f"{source} does not match the model of its input: missing "
                             f"{missing[:3]}, wrong shape {wrong[:3]}")
        return {k: np.asarray(loaded[k]) for k in expected}

    def _from_model(self, path: str | os.PathLike, flat: dict, finetune: bool = False) -> dict:
        from ..cli.convert import read_neutral
        from ..io.model_file import model_from_dict
        from ..model.type_map import TypeMapError, change_type_map, new_types

        data = read_neutral(path)
        if isinstance((data["model"].get("descriptor") or {}).get("compress"), dict):
            raise ValueError(f"{path} is a compressed model (its embedding is a table); start "
                             "from the model it was compressed from")
        wanted, found = list(self.model.type_map), list(data["model"].get("type_map") or [])
        if finetune and found != wanted:  # DeePMD-kit: the input's type map wins
            stat = None
            if new_types(found, wanted):  # their davg/dstd from the fine-tuning data
                s = compute_statistics(self.model, flat, self.train_systems, self.config,
                                       self.global_batch_sizes(self.config))
                desc = self.model.atomic.descriptor
                if hasattr(desc, "stat_blocks"):  # DPA-2: one pair per block
                    stat = {k: {v: s[f"descriptor/{k}/{v}"] for v in ("davg", "dstd")}
                            for k, _ in desc.stat_blocks()}
                else:
                    stat = {"davg": s["descriptor/davg"], "dstd": s["descriptor/dstd"]}
            try:
                data = change_type_map(data, wanted, new_type_stat=stat,
                                       seed=int(self.config["training"]["seed"]))
            except TypeMapError as err:
                raise TypeMapError(f"--finetune {path}: {err}") from None
            print(f"fine-tuning {path}: type_map {found} mapped to {wanted}", file=self.log)
        model, params = model_from_dict(data, str(path))
        if list(model.type_map) != wanted:
            raise ValueError(f"{path}: its type_map {model.type_map} differs from the input's "
                             f"{self.model.type_map} (use --finetune to map one onto the other)")
        if (model.sel, model.rcut) != (self.model.sel, self.model.rcut):
            raise ValueError(f"{path}: its sel {model.sel} and rcut {model.rcut} (for type_map "
                             f"{wanted}) differ from the input's {self.model.sel}, "
                             f"{self.model.rcut}")
        return self._checked(flatten(params), flat, str(path))

    def numpy_params(self) -> dict:
        """All parameters as a flat dict of NumPy arrays."""
        b = self.backend
        return {k: np.asarray(b.to_numpy(v)) for k, v in {**self.trainable, **self.fixed}.items()}

    def model_params(self) -> Any:
        """The nested parameter tree (NumPy), ready for ``model.serialize``."""
        return unflatten(self.numpy_params(), self.template)

    # ---- one step ------------------------------------------------------------------------------
    def _batch(self, batch: Batch) -> dict:
        b = self.backend
        nd = batch.nd
        out = {"coord": b.asarray(np.asarray(nd.coord, dtype=self.coord_dtype)),
               "atype": b.asarray(nd.atype), "nlist": b.asarray(nd.nlist),
               "mapping": b.asarray(nd.mapping)}
        for name in self.terms:
            value = getattr(batch, name)
            if value is not None:
                out[name] = b.asarray(np.asarray(value, dtype=np.float64))
        return out

    def _scalar(self, x: float) -> Any:
        return self.backend.asarray(np.asarray(x, dtype=np.float64))

    def step(self, step: int) -> tuple[float, dict, Batch]:
        """Run training step ``step`` (0-based): (loss, metrics before the update, batch)."""
        batch = self.share(self.loader.next_batch())
        lr = self.schedule(step)
        pref = {k: self._scalar(v) for k, v in self.loss.prefactors(lr).items()}
        c1, c2 = self.optimizer.corrections(step + 1)
        trainable, opt_state, loss, metrics = self.train_step(
            self.trainable, self.fixed, self.opt_state, self._batch(batch), self._scalar(lr),
            pref, self._scalar(c1), self._scalar(c2))
        value = float(self.backend.to_numpy(loss))
        if not math.isfinite(value):
            where = f"system {batch.system}, frames {batch.frames.tolist()}"
            keep = (f"the last good checkpoint is {self.last_checkpoint}"
                    if self.last_checkpoint else "no checkpoint was written yet")
            raise TrainingError(f"the loss became {value} at step {step + 1} ({where}); "
                                f"training stopped; {keep}")
        self.trainable, self.opt_state = trainable, opt_state
        m = {k: float(self.backend.to_numpy(v)) for k, v in metrics.items()}
        return value, m, batch

    def validate(self, lr: float) -> dict:
        """Metrics over ``numb_btch`` validation batches at learning rate ``lr`` (the step's):
        each averaged over batches weighted by their atom count, as DeePMD-kit does."""
        if self.valid_loader is None:
            return {}
        nb = int(self.config["training"]["validation_data"].get("numb_btch", 1))
        pref = {k: self._scalar(v) for k, v in self.loss.prefactors(lr).items()}
        sums: dict[str, float] = {}
        weight = 0
        for batch in self.valid_loader.iter_batches(nb):
            _, metrics = self.eval_step(self.trainable, self.fixed, self._batch(batch), pref)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + batch.natoms * float(self.backend.to_numpy(v))
            weight += batch.natoms
        return {k: v / weight for k, v in sums.items()}

    # ---- files ---------------------------------------------------------------------------------
    def save(self, step: int) -> Path:
        """Checkpoint after ``step`` completed steps (written by rank 0); returns its path."""
        b = self.backend
        tcfg = self.config["training"]
        path = checkpoint_path(self.workdir / tcfg["save_ckpt"], step)
        if self.rank != 0:
            self.last_checkpoint = path
            return path
        opt = {p: {k: np.asarray(b.to_numpy(v)) for k, v in self.opt_state[p].items()}
               for p in "mv"}
        meta = {"step": step, "config": self.config, "backend": b.name,
                "loader_state": as_jsonable(self.loader.state_dict()),
                "min_nbor_dist": self.min_nbor_dist}
        save_checkpoint(path, self.numpy_params(), opt, meta)
        write_pointer(self.workdir, path)
        prune(self.workdir / tcfg["save_ckpt"], int(tcfg["max_ckpt_keep"]))
        self.last_checkpoint = path
        return path

    def _lcurve_header(self) -> str:
        names = ["rmse"] + [f"rmse_{t}" for t in ("e", "f", "v", "ae")
                            if {"e": "energy", "f": "force", "v": "virial",
                                "ae": "atom_ener"}[t] in self.terms]
        cols = []
        for n in names:
            cols += [f"{n}_val", f"{n}_trn"] if self.valid_loader else [f"{n}_trn"]
        self._lcurve_names = names
        return "# " + " ".join(f"{c:>11s}" for c in ["step", *cols, "lr"])

    def _lcurve_line(self, step: int, trn: dict, val: dict, lr: float) -> str:
        vals = []
        for n in self._lcurve_names:
            if self.valid_loader:
                vals.append(val.get(n, float("nan")))
            vals.append(trn.get(n, float("nan")))
        return f"  {step:11d} " + " ".join(f"{v:11.2e}" for v in vals) + f" {lr:11.1e}"

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to ``numb_steps``; returns the last checkpoint."""
        from tqdm import tqdm

        tcfg = self.config["training"]
        nsteps = int(tcfg["numb_steps"])
        disp_freq, save_freq = int(tcfg["disp_freq"]), int(tcfg["save_freq"])
        self.workdir.mkdir(parents=True, exist_ok=True)
        lead = self.rank == 0  # only rank 0 writes files and logs
        if self.start_step == 0 and lead:
            write_normalized(self.config, self.workdir / "out.json")
        lcurve_path = Path(self.workdir / tcfg["disp_file"] if lead else os.devnull)
        if not lead:
            self.log = open(os.devnull, "w")  # noqa: SIM115
        mode = "a" if self.start_step > 0 and lcurve_path.is_file() else "w"
        header = self._lcurve_header()
        bar = tqdm(total=nsteps, initial=self.start_step, unit="step", dynamic_ncols=True,
                   disable=not (lead and sys.stderr.isatty()), file=sys.stderr)
        t0 = time.perf_counter()
        step = self.start_step
        with open(lcurve_path, mode) as lcurve:
            if mode == "w":
                lcurve.write(header + "\n")
            try:
                while step < nsteps:
                    lr = self.schedule(step)
                    loss, metrics, _ = self.step(step)
                    self.losses.append(loss)
                    step += 1
                    bar.update(1)
                    if step == 1 or step % disp_freq == 0 or step == nsteps:
                        val = self.validate(lr)
                        lcurve.write(self._lcurve_line(step, metrics, val, lr) + "\n")
                        lcurve.flush()
                        text = (f"step {step}/{nsteps}: loss {loss:.4e}, "
                                + ", ".join(f"{k} {v:.3e}" for k, v in metrics.items()
                                            if k != "rmse")
                                + (", val " + ", ".join(f"{k} {v:.3e}" for k, v in val.items()
                                                        if k != "rmse") if val else "")
                                + f", lr {lr:.2e}, {time.perf_counter() - t0:.1f} s")
                        if bar.disable:
                            print(text, file=self.log, flush=True)
                        else:
                            bar.set_postfix_str(f"loss {loss:.3e}")
                    if step % save_freq == 0 or step == nsteps:
                        self.save(step)
            except KeyboardInterrupt:
                if step > self.start_step and (self.last_checkpoint is None
                                               or not str(self.last_checkpoint).endswith(
                                                   f"-{step}.npz")):
                    path = self.save(step)
                    print(f"\ninterrupted after step {step}; saved {path}", file=self.log)
                raise
            finally:
                bar.close()
        assert self.last_checkpoint is not None
        return self.last_checkpoint


def train(input_file: str | os.PathLike | dict, backend: str, workdir: str | os.PathLike = ".",
          restart: str | os.PathLike | None = None, init_model: str | os.PathLike | None = None,
          finetune: str | os.PathLike | None = None, log: TextIO | None = None) -> Trainer:
    """Read ``input_file`` (path or dict), train, and return the finished :class:`Trainer`."""
    from .argcheck import load_input

    if isinstance(input_file, dict):
        config, input_dir = input_file, Path(".")
    elif restart is not None:
        config, input_dir = {}, Path(input_file).parent
    else:
        config, input_dir = load_input(input_file), Path(input_file).parent
    trainer = Trainer(config, backend, input_dir=input_dir, workdir=workdir, restart=restart,
                      init_model=init_model, finetune=finetune, log=log)
    end = getattr(trainer.backend, "end_distributed", None)
    completed = False
    try:
        trainer.run()
        completed = True
    finally:
        if end is not None:
            end(completed=completed)
    return trainer

