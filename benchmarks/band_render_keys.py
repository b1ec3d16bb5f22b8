"""The editor's key of each band render (diagnostics and evaluation only; never train on this file).

``scripts/render_band.py`` writes no key: the renders are unlabeled training
audio. To measure how well a mode pseudo-label rule or a model does *on the
training data itself*, or to score models on a held-out draw of band renders
(band-like music with drums), this script looks each clip's piece up in the
music21 corpus, reads the key its editor wrote (ABC ``K:``, kern key token,
MusicXML ``<key>``, as ``scripts/render_symbolic.py`` does) and transposes it
by the clip's ``transpose``. The CSV it writes (``path,key``, absolute paths) is a dataset for
``musicssl evaluate --dataset csv`` and ``benchmarks/key_pseudo_labels.py
--dataset csv``; it prints the major share. Usage::

    python benchmarks/band_render_keys.py work-data/band/manifest.csv work-data/band2/manifest.csv \\
        --out runs/band_keys.csv
    python benchmarks/key_pseudo_labels.py src/musicssl/data/models/skey_band.safetensors \\
        --dataset csv --manifest runs/band_keys.csv --limit 0 ... (or a number of clips)
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from render_symbolic import Candidate, find_candidates, load_score

from musicssl.io.atomic import atomic_write_text


def _rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


def final_bass_pitch_class(candidate: Candidate) -> int | None:
    """Pitch class (C = 0) of the lowest note sounding at the end of the score's lowest
    part (its last note or chord), untransposed; None for a score without notes."""
    score = load_score(candidate)
    parts = list(getattr(score, "parts", [])) or [score]
    notes = list(parts[-1].flatten().notes)
    if not notes:
        return None
    return min(notes[-1].pitches, key=lambda pitch: pitch.ps).pitchClass


def editor_keys(manifests: list[Path], final_tonic: bool = False) -> list[tuple[str, str]]:
    """``(absolute audio path, key)`` of every clip of ``manifests`` whose piece states its key;
    with ``final_tonic`` only those whose last bass note is that key's tonic."""
    import music21

    rows = [(m, r) for m in manifests for r in _rows(m)]
    corpus = Path(music21.__file__).parent / "corpus"
    collections = sorted({r["collection"] for _, r in rows})
    candidates = {c.piece_id: c for c in find_candidates([corpus / c for c in collections],
                                                         {"abc", "krn", "xml"})}
    out, finals = [], {}                  # finals: piece id -> last bass pitch class (a score is parsed once)
    for manifest, row in rows:
        candidate = candidates.get(row["piece_id"])
        if candidate is not None:
            if final_tonic:
                if candidate.piece_id not in finals:
                    finals[candidate.piece_id] = final_bass_pitch_class(candidate)
                if finals[candidate.piece_id] != candidate.key.tonic:
                    continue
            key = candidate.key.transpose(int(row["transpose"]))
            out.append((str((manifest.parent / row["path"]).absolute()), str(key)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifests", nargs="+", type=Path, help="manifest.csv files of scripts/render_band.py")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (path,key)")
    p.add_argument("--final-tonic", action="store_true",
                   help="keep only clips whose score's last bass note is the stated tonic")
    args = p.parse_args(argv)
    keys = editor_keys(args.manifests, args.final_tonic)
    n = sum(len(_rows(m)) for m in args.manifests)
    lines = ["path,key"] + [f'"{path}",{key}' for path, key in keys]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    major = sum(key.endswith("major") for _, key in keys)
    kept = "with a stated key" + (" and a last bass note on its tonic" if args.final_tonic else "")
    print(f"{len(keys)} of {n} clips {kept}; {major} major ({100 * major / max(len(keys), 1):.1f} %), "
          f"{len(keys) - major} minor -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
