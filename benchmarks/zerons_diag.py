"""Short controlled ZeroNS pretext runs with the activation probe logged every N steps.

One run = a config file plus ``key=value`` overrides (PretrainConfig fields), trained
on a feature cache for ``max_minutes``; every ``--probe-every`` steps the current
networks are probed (``benchmarks/zerons_probe.py``: AUC of on- vs off-beat frames of
the raw branch outputs and the calibrated combined activation) on the first
``--probe-seconds`` s of ``--probe-clips`` clips of a beat set. The history goes to
``OUT/probe.json``; with ``--keep-probed`` each probed state is saved too, so that a
checkpoint can be chosen on the probe set (use a set you do not report, e.g. a draw of
``scripts/render_band.py``, whose drum grid is annotated).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/zerons_diag.py --cache work-data/cache \\
        --out work-data/runs/t01 --config configs/zerons_cpu_small.yaml temperature=0.1 max_minutes=10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def parse_override(text: str):
    import yaml

    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"override {text!r} must look like key=value")
    return key, yaml.safe_load(value)


def probe_callback(feats, refs, every: int, history: list, out: Path, keep: Path | None = None):
    import lightning as L

    from zerons_probe import calibrated, probe_estimator

    class Probe(L.Callback):
        def _probe(self, trainer, module):
            step = trainer.global_step
            if history and history[-1]["step"] == step:
                return
            was = module.training
            t0 = time.monotonic()
            res = probe_estimator(calibrated(module.model.eval(), module.cfg.center_outputs), feats, refs)
            module.train(was)
            m = trainer.callback_metrics
            row = {"step": step, "loss": float(m.get("train_loss", float("nan"))),
                   "sync_acc": float(m.get("sync_acc", float("nan"))),
                   **{f"{k}_{s}": round(v, 4) for k, r in res.items() for s, v in r.items()},
                   "probe_s": round(time.monotonic() - t0, 1)}
            history.append(row)
            out.write_text(json.dumps(history, indent=1))
            if keep is not None:   # a Lightning checkpoint per probe, for choosing one afterwards
                trainer.save_checkpoint(str(keep / f"step{step:06d}.ckpt"))
            print(f"probe step {step}: loss {row['loss']:.3f} AUC act {row['act_beat_auc']:.3f} "
                  f"(best lag {row['act_beat_auc_best_lag']:.3f}) perc {row['perc_beat_auc']:.3f} "
                  f"rest {row['rest_beat_auc']:.3f} ratio {row['act_beat_peak_ratio']:.3f}", flush=True)

        def on_train_start(self, trainer, module):
            self._probe(trainer, module)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step % every == 0:
                self._probe(trainer, module)

        def on_train_end(self, trainer, module):
            self._probe(trainer, module)

    return Probe()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="ZeroNS feature cache of the training audio")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=str(REPO / "configs" / "zerons_cpu_small.yaml"))
    p.add_argument("overrides", nargs="*", help="key=value PretrainConfig settings")
    p.add_argument("--root", default="/work/main/work-data/lmms-beats", help="probe set (labels.csv)")
    p.add_argument("--probe-clips", type=int, default=8)
    p.add_argument("--probe-seconds", type=float, default=30.0)
    p.add_argument("--probe-every", type=int, default=20)
    p.add_argument("--probe-cache", default="/tmp/musicssl_zerons_probe")
    p.add_argument("--keep-probed", action="store_true",
                   help="save a checkpoint at every probe (OUT/probed/stepNNNNNN.ckpt)")
    args = p.parse_args(argv)

    import torch
    import yaml

    from musicssl.beat.separation import get_separator
    from musicssl.beat.config import PretrainConfig
    from musicssl.beat.train import pretrain
    from zerons_probe import cached_features, load_items

    torch.set_num_threads(1)
    values = yaml.safe_load(Path(args.config).read_text()) or {}
    values.update(dict(parse_override(o) for o in args.overrides))
    config = PretrainConfig.from_dict(values)
    root = Path(args.root)
    items = load_items(root, args.probe_clips, args.probe_seconds)
    feats = cached_features(items, Path(args.probe_cache) / root.resolve().name, args.probe_seconds,
                            get_separator("hpss"))
    refs = {i: r for i, _, r in items}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    history: list = []
    keep = out / "probed" if args.keep_probed else None
    if keep is not None:
        keep.mkdir(exist_ok=True)
    t0 = time.monotonic()
    pretrain(args.cache, out, config, progress=False, export=False,
             callbacks=[probe_callback(feats, refs, args.probe_every, history, out / "probe.json", keep)])
    print(f"done: {history[-1]['step'] if history else 0} steps in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
