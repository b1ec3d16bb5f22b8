"""Downbeats and beats per bar of the meter stage (musicssl.beat.meter) against honest baselines.

For every track the beats come from two sources, each scored separately:

* ``decoded``   the default tracker's beats (onset strength + DBN, ``musicssl beats``)
* ``annotated`` the annotated beat times (oracle beats: isolates the numbering stage)

and are numbered by these systems:

* ``every M-th, M from labels``  1 on the first beat and every M-th after it, M = the
                                 numerator of the labelled time signature (a baseline that
                                 knows the meter but not the phase)
* ``every M-th, auto M``         the same with M chosen by the meter stage (default features)
* ``meter: FEATURES``            the meter stage (auto M, phase from the accent) with each
                                 feature set; ``low+chroma`` is the shipped default, fixed
                                 before this benchmark was run
* ``meter: low+chroma, M=4``    the stage's phase with M fixed at 4 (``--meter 4``; also
                                 the "always 4" baseline of ``M ok``)
* ``meter: low+chroma, M from labels``  the stage's phase with the labelled M

Scores: downbeat F-measure (``mir_eval.beat.f_measure``, ±70 ms, on downbeat times, no
trimming) averaged over tracks, and ``M ok``: the share of tracks whose beats per bar
equals the label's numerator.

Datasets: ``--dataset csv --root work-data/lmms-beats`` (labels.csv with ``path``,
``beats_path`` with beat-in-bar numbers, ``time_signature``): downbeat F and M.
``--dataset dev-synth``: its beat files have times only, and a pickup bar (possible in
the scores it renders) makes bar starts ambiguous, so only ``M ok`` is scored there, on
tracks whose time signature is 3/4 or 4/4 (beat = quarter note, so M is the numerator).

    OMP_NUM_THREADS=1 python benchmarks/downbeat_eval.py --dataset csv --root work-data/lmms-beats
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"low": ("low",), "chroma": ("chroma",), "low+chroma": ("low", "chroma"),
            "low+chroma+onset": ("low", "chroma", "onset")}


def load_items(root: Path, dataset: str, limit: int | None) -> list[dict]:
    from musicssl.evaluation.beat_annotations import read_beat_annotation

    items = []
    with open(root / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            ts = row.get("time_signature", "")
            if dataset == "dev-synth" and ts not in ("3/4", "4/4"):
                continue
            ann = read_beat_annotation(root / row["beats_path"])
            items.append({"id": Path(row["path"]).stem, "audio": root / row["path"], "beats": ann.times,
                          "downbeats": ann.downbeats, "m": int(ts.split("/")[0])})
    return items[:limit] if limit else items


def downbeat_f(ref: np.ndarray | None, beats: np.ndarray, numbers: np.ndarray | None) -> float:
    import mir_eval

    if ref is None:
        return float("nan")
    est = np.zeros(0) if numbers is None else np.asarray(beats)[numbers == 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # mir_eval warns on empty estimates
        return float(mir_eval.beat.f_measure(np.asarray(ref), est))


def run(args) -> dict:
    from musicssl.beat.estimator import OnsetBeatEstimator
    from musicssl.beat.meter import (
        accent,
        beat_features,
        choose_meter,
        every_mth,
        meter_frames,
    )
    from musicssl.beat.onset import onset_envelope
    from musicssl.io.audio import load_audio

    items = load_items(Path(args.root), args.dataset, args.limit)
    tracker = OnsetBeatEstimator()
    systems = (["every M-th, M from labels", "every M-th, auto M"] + [f"meter: {v}" for v in VARIANTS]
               + ["meter: low+chroma, M=4", "meter: low+chroma, M from labels"])
    scores = {src: {s: {"F": [], "M": []} for s in systems} for src in ("decoded", "annotated")}
    per_file = []
    t0 = time.monotonic()
    for k, it in enumerate(items):
        x = load_audio(it["audio"], sr=16000)
        frames = meter_frames(x)
        decoded, _ = tracker.decode(onset_envelope(x))
        row = {"id": it["id"], "m_label": it["m"]}
        for src, beats in (("decoded", decoded), ("annotated", it["beats"])):
            feats = beat_features(frames, beats, ("low", "chroma", "onset"))
            names = ["low", "chroma", "onset"]
            results = {}
            for v, fs in VARIANTS.items():
                results[f"meter: {v}"] = choose_meter(accent(feats[:, [names.index(f) for f in fs]]), "auto")
            results["meter: low+chroma, M from labels"] = choose_meter(accent(feats[:, :2]), it["m"])
            results["meter: low+chroma, M=4"] = choose_meter(accent(feats[:, :2]), 4)
            auto = results["meter: low+chroma"]
            n = len(beats)
            numbered = {s: (r.numbers if r else None, r.beats_per_bar if r else None) for s, r in results.items()}
            numbered["every M-th, M from labels"] = (every_mth(n, it["m"]), it["m"])
            m_auto = auto.beats_per_bar if auto else None
            numbered["every M-th, auto M"] = (every_mth(n, m_auto) if m_auto else None, m_auto)
            for s, (numbers, m) in numbered.items():
                scores[src][s]["F"].append(downbeat_f(it["downbeats"], beats, numbers))
                scores[src][s]["M"].append(float(m == it["m"]))
            row[src] = {"n_beats": n, "m_auto": m_auto, "lag_corr": auto.scores if auto else {},
                        "F_meter": scores[src]["meter: low+chroma"]["F"][-1],
                        "F_every_label": scores[src]["every M-th, M from labels"]["F"][-1]}
        per_file.append(row)
        if (k + 1) % 20 == 0:
            print(f"  {k + 1}/{len(items)} tracks ({time.monotonic() - t0:.0f} s)", flush=True)
    with_f = args.dataset != "dev-synth"
    print(f"\n{args.dataset} ({args.root}): {len(items)} tracks, "
          f"M labels {dict(zip(*np.unique([it['m'] for it in items], return_counts=True)))}")
    head = f"{'system':<36}" + "".join(f"{src + ' ' + col:>18}" for src in ("decoded", "annotated")
                                       for col in (("F", "M ok") if with_f else ("M ok",)))
    print(head)
    table = {}
    for s in systems:
        cells, table[s] = "", {}
        for src in ("decoded", "annotated"):
            f, m = float(np.nanmean(scores[src][s]["F"])) if with_f else None, float(np.mean(scores[src][s]["M"]))
            table[s][src] = {"downbeat_F": f, "M_ok": m}
            cells += (f"{f:>18.3f}" if with_f else "") + f"{m:>18.2f}"
        print(f"{s:<36}{cells}")
    print(f"({time.monotonic() - t0:.0f} s)")
    result = {"dataset": args.dataset, "root": str(args.root), "n_tracks": len(items), "mean": table,
              "per_file": per_file}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("csv", "dev-synth"), default="csv")
    p.add_argument("--root", default=str(REPO / "work-data" / "lmms-beats"))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", help="write the results here")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
