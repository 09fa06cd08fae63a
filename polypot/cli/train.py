"""``polypot train INPUT.json``: train a model from a DeePMD-kit input on any autodiff backend."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace) -> int:
    from ..backend.registry import default_autodiff_backend
    from ..train.trainer import train

    backend = args.backend or default_autodiff_backend()
    if backend is None:
        raise ImportError("training needs an autodiff backend: pip install 'polypot[jax]' "
                          "(or torch, tensorflow, paddle)")
    trainer = train(args.input, backend, workdir=args.output_dir, restart=args.restart,
                    init_model=args.init_model, finetune=args.finetune)
    if trainer.rank == 0:
        print(f"finished {trainer.config['training']['numb_steps']} steps on {backend}; "
              f"last checkpoint {trainer.last_checkpoint}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model from a DeePMD-kit input.json")
    p.add_argument("input", help="input.json (DeePMD-kit v3 keys)")
    p.add_argument("-b", "--backend", default=None,
                   help="torch, jax, tensorflow or paddle (default: the first installed)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-r", "--restart", default=None,
                       help="continue exactly from this checkpoint (model.ckpt-STEP.npz)")
    group.add_argument("--init-model", default=None,
                       help="start from the parameters of a frozen or neutral model file")
    group.add_argument("--finetune", default=None,
                       help="like --init-model, mapping the model's types onto the input's "
                            "type_map, then re-fit the energy bias to the training data")
    p.add_argument("-o", "--output-dir", default=".",
                   help="folder for checkpoints, lcurve.out and out.json (default: .)")
    p.set_defaults(func=run)
