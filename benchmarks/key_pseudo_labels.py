"""What an S-KEY model's key-signature output tracks, and how good its mode pseudo-labels are.

For each labelled clip (crop offset 0, whole clip, model in eval mode):

* ``s = argmax(P[0] + P[1])``: the column S-KEY's mode pseudo-label starts from
  (SPEC §1.5). The script prints, separately for major and minor clips, the
  histogram of ``(true tonic − pitch class of crop bin s) mod 12``. A model
  whose output follows the key signature puts relative keys in (nearly) the
  same column; a model that follows the tonic puts parallel keys in the same
  column (then the histograms of major and minor clips peak at the same offset).
* the agreement of the pseudo-label ``c[s + δ] > c[s + δ + 3]`` with the true
  mode for every column shift ``δ`` (``δ = 0`` is the rule used in training:
  it only works when the model's columns line up with the crop's pitch classes
  the way the rule assumes);
* the ceiling of profile rules: major third vs minor third above the *true*
  tonic, with the SPEC's profile (log-CQT in [0, 1], as in training) and with
  profiles of the linear CQT magnitude and power (same bins and crop);
* the agreement with the true mode of each training rule (``authors``,
  ``thirds``, ``triads``, on the power profile as ``configs/skey_debian.yaml``)
  applied to random batches of 32 of these clips, as in training (the
  ``thirds`` and ``triads`` rules vote over the batch);
* whether the network's own mode (its calibrated major row against its minor
  row, same crop) makes the same errors as the ``thirds`` rule and as the
  SPEC's rule (``authors``, log-CQT profile): how often they agree, and how
  often each is right where they agree and where not;
* the ceiling of profile rules on the decision the network's mode row makes
  (major key or its relative minor): given the *true* key signature, how often
  the power profile alone picks the right one of the two (tonic louder, or the
  major triad's fifth louder than the minor triad's root). A network trained
  on such labels can learn them exactly (see the agreement above), so this
  bounds what more steps on them can give.

With ``--training-config CONFIG`` it also draws training batches (from that
config's feature cache, as in training) and prints which column-to-tonic
shift ``δ`` the ``thirds`` rule picks in each batch (profile of that config's
``mode_profile``). A shift that changes from batch to batch flips the mode
pseudo-labels of the whole batch.

Labels are only read to score; nothing is trained. Usage::

    python benchmarks/key_pseudo_labels.py runs/skey_default/model.safetensors ../shared/fixtures/skey.pt
    python benchmarks/key_pseudo_labels.py MODEL --manifest work-data/render24/labels.csv --limit 48
    python benchmarks/key_pseudo_labels.py MODEL --training-config configs/skey_debian.yaml --limit 0
    python benchmarks/key_pseudo_labels.py MODEL --training-config configs/skey_band_finetune.yaml \
        --training-data work-data/band/manifest.csv --batches 40 --batch-sizes 16 64 --limit 0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from musicssl.evaluation.datasets import load_dataset
from musicssl.dsp.cqt import crop_bins, log_compress
from musicssl.key import losses
from musicssl.key.estimator import KeyEstimator
from musicssl.key.features import compute_features
from musicssl.key.losses import PROFILE_EXPONENTS, magnitude_profile, pitch_class_profile
from musicssl.keys import cqt_bin_pitch_class


def diagnose(checkpoint: str, items, limit: int) -> dict:
    """Histograms and agreements (see module docstring) of one model over ``items``."""
    estimator = KeyEstimator.from_checkpoint(checkpoint)
    fe, model = estimator.frontend_config, estimator.model.eval()
    pc0 = int(cqt_bin_pitch_class(0))
    offsets = {"major": np.zeros(12, int), "minor": np.zeros(12, int)}
    agree, n = np.zeros(12), 0
    columns, powers, logs, majors, network_major, tonics = [], [], [], [], [], []
    major_row = estimator.calibration["row_modes"].index("major")
    ceiling = {"log-CQT": 0, "magnitude": 0, "power": 0}
    for item in items[:limit]:
        key = item.key
        magnitude = compute_features(item.path, fe, offset=item.offset, duration=item.duration).magnitude
        logcqt = log_compress(torch.as_tensor(magnitude)[None, None], fe.top_db)
        view = crop_bins(logcqt, 0, fe.crop_bins)
        with torch.inference_mode():
            p = model(view).float().numpy()[0].reshape(-1, 12)
        s = int(p.sum(0).argmax())
        c = pitch_class_profile(view)[0].numpy()            # the training profile (crop frame)
        offsets[key.mode][(key.tonic - pc0 - s) % 12] += 1
        agree += [(c[(s + d) % 12] > c[(s + d + 3) % 12]) == key.is_major for d in range(12)]
        tonic = (key.tonic - pc0) % 12
        linear = {name: magnitude_profile(view[:, :1], fe.top_db, exponent)[0].numpy()
                  for name, exponent in PROFILE_EXPONENTS.items()}           # magnitude, power
        for name, profile in (("log-CQT", c), *linear.items()):
            ceiling[name] += (profile[(tonic + 4) % 12] > profile[(tonic + 3) % 12]) == key.is_major
        columns.append(s)
        powers.append(linear["power"])
        logs.append(c)
        majors.append(key.is_major)
        tonics.append(tonic)
        network_major.append(bool(p[major_row].sum() > p[1 - major_row].sum()))
        n += 1
    return {"n": n, "offsets": offsets, "agreement": agree / n, "ceiling": {k: v / n for k, v in ceiling.items()},
            "rules": rule_agreement(np.array(columns), np.array(powers), np.array(majors)),
            "network_vs_rule": network_rule_overlap(np.array(columns), np.array(powers), np.array(majors),
                                                    np.array(network_major)),
            "network_vs_spec_rule": network_rule_overlap(np.array(columns), np.array(logs), np.array(majors),
                                                         np.array(network_major), rule_name="authors"),
            "shift_flip": shift_flip(np.array(columns), np.array(powers)),
            "relative_pair": relative_pair_ceiling(np.array(powers), np.array(tonics), np.array(majors))}


def relative_pair_ceiling(profiles: np.ndarray, tonics: np.ndarray, majors: np.ndarray) -> dict[str, float]:
    """Share of clips whose mode a profile rule gets right when the key signature is known.

    ``profiles``: ``(N, 12)``; ``tonics``: ``(N,)`` true tonics in the same frame;
    ``majors``: ``(N,)`` bool. With ``R`` the relative major's tonic (the tonic, or 3
    above a minor tonic) the rules say major iff ``"tonic"``: ``c[R] > c[R − 3]``;
    ``"triad"``: the major triad on ``R`` sounds more than the minor triad on ``R − 3``
    (they share two notes, so ``c[R + 7] > c[R − 3]``).
    """
    if len(tonics) == 0:
        return {"tonic": float("nan"), "triad": float("nan")}
    rows = np.arange(len(tonics))
    relative = np.where(majors, tonics, tonics + 3) % 12

    def c(offset: int) -> np.ndarray:
        return profiles[rows, (relative + offset) % 12]

    return {"tonic": float(((c(0) > c(-3)) == majors).mean()), "triad": float(((c(7) > c(-3)) == majors).mean())}


def _one_hot(columns) -> torch.Tensor:
    """Model outputs ``(N, 12)`` that put all mass on ``columns`` ``(N,)``: what the rules read of them."""
    return torch.nn.functional.one_hot(torch.as_tensor(columns), 12).float()


def shift_flip(columns: np.ndarray, profiles: np.ndarray) -> tuple[int, int, float]:
    """The two shifts with the highest ballot over all clips (``(N,)`` columns, ``(N, 12)`` power
    profiles) and the share of clips whose ``thirds`` label differs between them."""
    y = _one_hot(columns)
    profile = torch.as_tensor(profiles).float()
    _, scores = losses.column_shift_scores(y, y, profile)
    first, second = (int(d) for d in scores.topk(2).indices)
    labels = [losses.thirds_pseudo_labels(y, y, profile, shift_scores=_one_hot(d)) for d in (first, second)]
    return first, second, float((labels[0] != labels[1]).float().mean())


def network_rule_overlap(columns: np.ndarray, profiles: np.ndarray, majors: np.ndarray,
                         network_major: np.ndarray, rule_name: str = "thirds") -> dict[str, float]:
    """The network's mode ``network_major`` ``(N,)`` against the pseudo-label rule ``rule_name``
    (:data:`losses.PSEUDO_LABEL_RULES`) over all ``N`` clips as one batch: agreement, and the
    share of right answers where they agree / differ."""
    y = _one_hot(columns)
    rule = losses.PSEUDO_LABEL_RULES[rule_name](y, y, torch.as_tensor(profiles).float()).numpy() > 0.5
    same = rule == network_major

    def share(mask: np.ndarray, right: np.ndarray) -> float:
        return float(right[mask].mean()) if mask.any() else float("nan")

    return {"agree": float(same.mean()), "right_where_agree": share(same, rule == majors),
            "rule_right_where_not": share(~same, rule == majors),
            "network_right_where_not": share(~same, network_major == majors),
            "rule": float((rule == majors).mean()), "network": float((network_major == majors).mean())}


def rule_agreement(columns: np.ndarray, profiles: np.ndarray, majors: np.ndarray,
                   batch_size: int = 32, batches: int = 200, seed: int = 0) -> dict[str, float]:
    """Mean agreement with the true mode of each S-KEY pseudo-label rule over random batches.

    ``columns``: ``(N,)`` model columns ``s``; ``profiles``: ``(N, 12)`` in the crop frame;
    ``majors``: ``(N,)`` bool.
    """
    rng = np.random.default_rng(seed)
    y = _one_hot(columns)
    profile = torch.as_tensor(profiles).float()
    size = min(batch_size, len(columns))
    scores: dict[str, list[float]] = {rule: [] for rule in losses.MODE_RULES}
    for _ in range(batches if size else 0):
        idx = torch.as_tensor(rng.choice(len(columns), size, replace=False))
        for rule, values in scores.items():
            labels = losses.PSEUDO_LABEL_RULES[rule](y[idx], y[idx], profile[idx]).numpy() > 0.5
            values.append(float((labels == majors[idx.numpy()]).mean()))
    return {rule: float(np.mean(v)) if v else float("nan") for rule, v in scores.items()}


def batch_shifts(checkpoint: str, config_path: str, batches: int, batch_sizes: Sequence[int] = (32,),
                 seed: int = 0, data: str = "work-data/corpus/manifest.csv") -> dict[int, dict[int, int]]:
    """For each batch size, how often each shift ``δ`` wins the ``thirds`` rule's batch vote over
    ``batches`` training batches of ``data`` (the configs name no data); every size draws its
    batches from the same seed."""
    from musicssl.key.checkpoint import load_key_model
    from musicssl.key.config import TrainConfig
    from musicssl.key.train import training_set

    config = TrainConfig.from_yaml(config_path, {"data": [data]})
    dataset = training_set(config, log=lambda *a: None)
    model = load_key_model(checkpoint).model.eval()
    return {size: _shift_wins(model, config, dataset, batches, size, seed) for size in batch_sizes}


def _shift_wins(model, config, dataset, batches: int, batch_size: int, seed: int) -> dict[int, int]:
    rng = np.random.default_rng(seed)
    wins: dict[int, int] = {}
    for _ in range(batches):
        items = [dataset[int(i)] for i in rng.choice(len(dataset), batch_size, replace=False)]
        views = torch.stack([it["views"] for it in items])
        profile = losses.mode_label_profile(config.mode_profile, views, torch.stack([it["profile"] for it in items]),
                                            config.frontend().top_db)
        with torch.inference_mode():
            y_a, _ = losses.split_outputs(model(views[:, :1]).float(), model.n_rows)
            y_b, _ = losses.split_outputs(model(views[:, 1:2]).float(), model.n_rows)
        delta = int(losses.thirds_tonic_shift(y_a, y_b, profile)[1])
        wins[delta] = wins.get(delta, 0) + 1
    return dict(sorted(wins.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="two-row key models (project files or released .pt)")
    p.add_argument("--dataset", default="dev-synth", help="dataset format (see musicssl evaluate)")
    p.add_argument("--manifest", default="../shared/data/dev-synth", help="dataset folder or manifest")
    p.add_argument("--limit", type=int, default=80, help="labelled clips to diagnose (0: none)")
    p.add_argument("--training-config", help="also count the thirds rule's batch shift on this config's training batches")
    p.add_argument("--batches", type=int, default=12, help="training batches for --training-config")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32],
                   help="batch sizes to count the shift votes at (--training-config)")
    p.add_argument("--training-data", default="work-data/corpus/manifest.csv",
                   help="training data for --training-config (default: the project's corpus, "
                        "built by scripts/build_corpus.py)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    items = load_dataset(args.dataset, args.manifest).items
    if args.limit > 0:
        print(f"{min(args.limit, len(items))} clips of {args.manifest}")
    for ck in args.checkpoints:
        if args.training_config:
            shifts = batch_shifts(ck, args.training_config, args.batches, args.batch_sizes, data=args.training_data)
            for size, wins in shifts.items():
                print(f"\n{ck}: batch shift δ of the thirds rule, wins over {args.batches} training batches "
                      f"of {size}:", wins)
        if args.limit <= 0:
            continue
        r = diagnose(ck, items, args.limit)
        print(f"\n{Path(ck).name}")
        print("  (tonic - column s) mod 12, major clips:", " ".join(f"{v:3d}" for v in r["offsets"]["major"]))
        print("  (tonic - column s) mod 12, minor clips:", " ".join(f"{v:3d}" for v in r["offsets"]["minor"]))
        print("  pseudo-label agreement with the true mode, shift 0..11:",
              " ".join(f"{v:.2f}" for v in r["agreement"]))
        print(f"  training rule (shift 0): {r['agreement'][0]:.2f}")
        print("  M3 > m3 above the true tonic (ceiling of profile rules): "
              + ", ".join(f"{k} profile {v:.2f}" for k, v in r["ceiling"].items()))
        print("  training rules on the power profile, batches of 32: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["rules"].items()))
        first, second, flip = r["shift_flip"]
        print(f"  thirds labels (power profile) that differ between the two best shifts {first} and {second}: "
              f"{flip:.2f}")
        for name, o in (("the thirds rule (power profile)", r["network_vs_rule"]),
                        ("the SPEC's rule c[s] > c[s+3] (log-CQT profile)", r["network_vs_spec_rule"])):
            print(f"  network's mode vs {name}, all clips one batch: right {o['network']:.2f} vs "
                  f"{o['rule']:.2f}, agree on {o['agree']:.2f}; right where they agree {o['right_where_agree']:.2f}; "
                  f"where not: rule {o['rule_right_where_not']:.2f}, network {o['network_right_where_not']:.2f}")
        print("  major vs relative minor given the true key signature (power profile): "
              + ", ".join(f"{k} rule {v:.2f}" for k, v in r["relative_pair"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
