"""A label-free model-selection signal: each model's S-KEY loss terms on held-out unlabeled audio.

Draws a fixed set of training items (two segments and a transposed copy, as in
training, without the EQ augmentation) from ``--data`` through ``--config``'s
pipeline and feature cache, then runs every model on the same items in eval
mode and prints the batch means of the objective's terms (``key`` = ``pos`` +
``eq1`` + ``eq2``, ``mode``, ``balance``, the pseudo-label and network major
shares, ``loss``). Use audio none of the models trained on (e.g. band renders
made with other soundfonts for models trained on FluidR3 renders); no labels
are read.

    python benchmarks/key_ssl_signal.py --config configs/skey_band_finetune.yaml \\
        --data work-data/band3-msg/manifest.csv work-data/band3-opl/manifest.csv \\
        work-data/band3-cs/manifest.csv --cache-dir runs/cache/band12-hop2048 \\
        --model shipped=src/musicssl/data/models/skey_band.safetensors --model other=runs/x/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np
import torch

TERMS = ("key", "pos", "eq1", "eq2", "mode", "balance", "pseudo_major", "major_share", "loss")


def held_out_items(config_path: str, data: list[str], cache_dir: str, n_items: int, seed: int = 0) -> tuple:
    """``(config, items)``: ``n_items`` fixed training items of ``data`` (EQ off)."""
    from musicssl.key.config import TrainConfig
    from musicssl.key.train import training_set

    config = TrainConfig.from_yaml(config_path, {"data": data, "eq_db": 0.0, "val_fraction": 0.0,
                                                 "cache_dir": cache_dir, "out": tempfile.mkdtemp(),
                                                 "progress": False})
    dataset = training_set(config, log=lambda *a: None)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset), min(len(dataset), n_items), replace=False)
    return config, [dataset[int(i)] for i in chosen]


@torch.inference_mode()
def loss_terms(model: torch.nn.Module, config, items: list[dict], batch_size: int = 32) -> dict[str, float]:
    """Mean of the training objective's terms (``musicssl.key.lightning.three_view_objective``)
    over ``items`` in batches of ``batch_size`` (each batch votes its own pseudo-label shift:
    no running vote, so every model is scored on the same footing)."""
    from musicssl.key import losses
    from musicssl.key.lightning import three_view_objective

    objective = losses.ObjectiveConfig(**{**config.objective_kwargs(), "shift_momentum": 0.0})
    sums: dict[str, list[float]] = {}
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        _, terms = three_view_objective(model, objective, torch.stack([it["views"] for it in batch]),
                                        torch.stack([it["profile"] for it in batch]),
                                        torch.as_tensor([int(it["k"]) for it in batch]), config.frontend().top_db)
        for name, value in terms.items():
            sums.setdefault(name, []).append(float(value))
    return {name: float(np.mean(values)) for name, values in sums.items()}


def main(argv=None) -> int:
    from musicssl.key.checkpoint import load_key_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="training config whose pipeline and objective to use")
    p.add_argument("--data", nargs="+", required=True, help="held-out unlabeled audio (folders or manifests)")
    p.add_argument("--cache-dir", required=True, help="feature cache for --data (built if missing)")
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="a key model, repeatable")
    p.add_argument("--items", type=int, default=320, help="fixed items drawn (default: 320)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    config, items = held_out_items(args.config, args.data, args.cache_dir, args.items, args.seed)
    print(f"{len(items)} items of {', '.join(args.data)}")
    print("| model | " + " | ".join(TERMS) + " |")
    print("|---|" + "---|" * len(TERMS))
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"--model {spec!r}: write NAME=PATH")
        terms = loss_terms(load_key_model(path).model.eval(), config, items)
        print(f"| {name} | " + " | ".join(f"{terms.get(t, float('nan')):.4f}" for t in TERMS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
