"""Template key baselines side by side, with an independent librosa reference, in one run.

Rows (MIREX with mir_eval's weights, and exact accuracy, in %):

* ``<profile> (musicssl baseline)``: ``musicssl key --model <profile>``, i.e.
  :class:`musicssl.key.templates.TemplateKeyEstimator` on the chroma of
  :func:`musicssl.dsp.chroma.chroma_cqt` (36 bins per octave, tuning compensated);
* ``<profile>, CQT chroma``: the same profile on the chroma of the networks'
  12-bin CQT folded (``chroma="cqt"``, weaker);
* ``<profile>, reference``: computed here without musicssl's key code —
  ``librosa.load`` at 22 050 Hz, ``librosa.feature.chroma_cqt`` averaged over
  time, Pearson correlation with the 24 rotated profiles (Krumhansl–Schmuckler).

The issue's target: the musicssl baseline within 2 points of the reference.

    python benchmarks/key_baselines.py                      # dev-synth
    python benchmarks/key_baselines.py --manifest work-data/render24/labels.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    import librosa
    import mir_eval

    from musicssl.key.features import compute_features
    from musicssl.key.templates import key_templates, PROFILES
    from musicssl.key.estimator import TemplateKeyEstimator
    from musicssl.keys import KEY_LABELS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default=str(REPO.parent / "shared" / "data" / "dev-synth" / "labels.csv"),
                   help="CSV with path (relative to the CSV) and key columns")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)

    manifest = Path(args.manifest)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))[:args.limit]
    profiles = list(PROFILES)
    ours = {q: TemplateKeyEstimator(q, chroma="chroma") for q in profiles}
    cqt = {q: TemplateKeyEstimator(q, chroma="cqt") for q in profiles}
    scores: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, ref: str, index: int) -> None:
        score = mir_eval.key.weighted_score(ref, KEY_LABELS[index])
        scores.setdefault(name, []).append((score, float(score == 1.0)))

    for n, row in enumerate(rows):
        path = manifest.parent / row["path"]
        ref = row["key"]
        features = compute_features(path, chroma=True)
        y, _ = librosa.load(path, sr=22050, mono=True)
        reference_chroma = librosa.feature.chroma_cqt(y=y, sr=22050).mean(axis=1)
        for q in profiles:
            add(f"{q} (musicssl baseline)", ref, int(np.argmax(ours[q].estimate_features([features])[0].probabilities)))
            add(f"{q}, CQT chroma", ref, int(np.argmax(cqt[q].estimate_features([features])[0].probabilities)))
            r = [np.corrcoef(reference_chroma, t)[0, 1] for t in key_templates(q)]
            add(f"{q}, reference (librosa)", ref, int(np.argmax(r)))
        if (n + 1) % 50 == 0:
            print(f"  {n + 1}/{len(rows)}", file=sys.stderr, flush=True)
    print(f"{manifest.parent.name}: {len(rows)} clips")
    print(f"{'baseline':<36} {'MIREX':>6} {'exact':>6}")
    for name, values in scores.items():
        v = np.asarray(values)
        print(f"{name:<36} {100 * v[:, 0].mean():6.1f} {100 * v[:, 1].mean():6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
