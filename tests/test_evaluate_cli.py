"""``musicssl evaluate`` end to end on synthesised cadences, and the report helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musicssl.cli.main import main
from musicssl.evaluation.datasets import load_manifest
from musicssl.key.evaluate import evaluate
from musicssl.evaluation.key_report import format_markdown
from musicssl.key.estimator import TemplateKeyEstimator
from musicssl.keys import Key

from conftest import harmonic_tone

SR = 22050


def cadence(key: Key, sr: int = SR) -> np.ndarray:
    """I-IV-V-I (i-iv-V-i) block chords with a bass, 1.5 s each, harmonic tones."""
    tonic_hz = 220.0 * 2 ** (((key.tonic - 9) % 12) / 12)
    third = 3 if key.mode == "minor" else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    out = []
    for chord in chords:
        tone = sum(harmonic_tone(tonic_hz * 2 ** (s / 12), 1.5, sr) for s in chord)
        out.append(tone + harmonic_tone(tonic_hz / 2 * 2 ** (chord[0] / 12), 1.5, sr))
    x = np.concatenate(out)
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture()
def small_dataset(tmp_path):
    keys = {"c.wav": Key(0), "g.wav": Key(7), "a_min.wav": Key(9, "minor"), "e_min.wav": Key(4, "minor")}
    for name, key in keys.items():
        sf.write(tmp_path / name, cadence(key), SR)
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    lines = ["path,key,genre"]
    lines += [f"{name},{key},{'major' if key.is_major else 'minor'}" for name, key in keys.items()]
    lines += ["broken.wav,D major,major", "missing.wav,C major,major"]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_evaluate_cli_writes_json_markdown_and_figures(small_dataset, capsys):
    out = small_dataset / "results"
    code = main(["evaluate", "--dataset", "csv", str(small_dataset / "labels.csv"),
                 "--model", "krumhansl", "--model", "temperley", "--out", str(out),
                 "--compare", "--figures", "--quiet"])
    printed = capsys.readouterr()
    assert code == 1  # one file could not be decoded
    assert "MIREX (mir_eval: fifth above)" in printed.out and "MIREX (both fifths" in printed.out
    assert "Differences against `krumhansl`" in printed.out
    assert "1 missing audio" in printed.err
    data = json.loads((out / "results.json").read_text())
    assert data["estimators"] == ["krumhansl", "temperley"]
    assert data["dataset"]["missing_audio"] and data["dataset"]["missing_audio"][0].endswith("missing.wav")
    assert [f["id"] for f in data["failures"]] == ["broken"]
    for name in ("krumhansl", "temperley"):
        summary = data["summary"][name]
        assert summary["n"] == 4 and summary["failed"] == 1
        assert summary["mirex"] == pytest.approx(1.0)      # clean cadences: every key right
        assert summary["counts"]["correct"] == 4
        assert set(summary["groups"]) == {"major", "minor"}
    item = next(i for i in data["items"] if i["id"] == "g")
    prediction = item["predictions"]["krumhansl"]
    assert prediction["key"] == "G major" and prediction["scores"]["mirex_both"] == 1.0
    assert len(prediction["probabilities"]) == 24
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    markdown = (out / "results.md").read_text()
    assert "| krumhansl | 4/5 |" in markdown and "Per genre" in markdown
    for stem in ("confusion_krumhansl", "confusion_temperley", "keygram_krumhansl_c"):
        assert (out / f"{stem}.png").stat().st_size > 1000
        assert (out / f"{stem}.svg").is_file()


def test_evaluate_without_out_says_where_it_wrote(small_dataset, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code = main(["evaluate", "--dataset", "csv", str(small_dataset / "labels.csv"),
                 "--model", "krumhansl", "--quiet"])
    err = capsys.readouterr().err
    where = tmp_path.resolve() / "musicssl-eval" / "csv"
    assert code == 1 and (where / "results.json").is_file()
    assert f"to {where}, the default folder (--out DIR chooses another)" in err


def test_scores_reflect_wrong_labels(small_dataset):
    # relabel: C major clip annotated as F major -> estimate C is a fifth ABOVE F
    text = (small_dataset / "labels.csv").read_text().replace("c.wav,C major", "c.wav,F major")
    (small_dataset / "wrong.csv").write_text(text)
    ds = load_manifest(small_dataset / "wrong.csv")
    ds.items = [i for i in ds.items if i.id != "broken"]
    evaluation = evaluate(ds, {"krumhansl": TemplateKeyEstimator("krumhansl")})
    summary = evaluation.summary("krumhansl")
    assert summary.n == 4
    assert summary.counts["fifth_above"] == 1
    assert summary.mirex == pytest.approx((0.5 + 3) / 4)
    assert summary.mirex_both == pytest.approx((0.5 + 3) / 4)
    assert summary.ksea == pytest.approx((0.5 + 3) / 4)
    matrix = evaluation.confusion("krumhansl")
    assert matrix[Key(5).index, Key(0).index] == 1 and matrix.sum() == 4
    md = format_markdown(evaluation)
    assert "[↑1 ↓0]" in md


def test_cli_rejects_bad_arguments(small_dataset, capsys):
    assert main(["evaluate", "--dataset", "csv", str(small_dataset / "labels.csv"),
                 "--model", "krumhansl", "--limit", "-1"]) == 2
    assert main(["evaluate", "--dataset", "csv", str(small_dataset / "nope.csv"), "--model", "krumhansl"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--dataset", "mnist", str(small_dataset)])


def test_evaluate_records_the_transpositions_of_network_models(small_dataset, capsys):
    out = small_dataset / "results"
    args = ["evaluate", "--dataset", "csv", str(small_dataset / "labels.csv"), "--model", "default",
            "--model", "krumhansl", "--out", str(out), "--quiet", "--limit", "2"]
    assert main(args + ["--transpositions", "3"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["settings"] == {"default": {"transpositions": 3, "prior": "kostka-payne"}, "krumhansl": {}}
    assert main(args) == 0                                         # default: 12 crops
    assert json.loads((out / "results.json").read_text())["settings"]["default"] == {
        "transpositions": 12, "prior": "kostka-payne"}
    assert main(args + ["--transpositions", "40"]) == 2            # more crops than the front end has
    assert "transpositions must be between 1 and 16" in capsys.readouterr().err


def test_evaluate_scores_a_network_with_and_without_its_prior(small_dataset, capsys):
    out = small_dataset / "results"
    args = ["evaluate", "--dataset", "csv", str(small_dataset / "labels.csv"), "--model", "skey-debian",
            "--model", "skey-debian+temperley", "--out", str(out), "--quiet", "--limit", "2",
            "--transpositions", "1"]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["settings"] == {"skey-debian": {"transpositions": 1, "prior": None},
                                "skey-debian+temperley": {"transpositions": 1, "prior": "temperley"}}
    first = data["items"][0]["predictions"]
    assert first["skey-debian"]["probabilities"] != first["skey-debian+temperley"]["probabilities"]
    assert main(args + ["--prior", "none"]) == 0                   # --prior overrides every spec's
    assert set(json.loads((out / "results.json").read_text())["settings"]) == {"skey-debian", "skey-debian#2"}
    assert main(args[:-2] + ["--prior", "kostka-payne", "--transpositions", "1", "--model", "krumhansl"]) == 0
    settings = json.loads((out / "results.json").read_text())["settings"]   # templates ignore --prior
    assert settings == {name: {"transpositions": 1, "prior": "kostka-payne"}
                        for name in ("skey-debian+kostka-payne", "skey-debian+kostka-payne#2")} | {"krumhansl": {}}
    assert main(["evaluate", "--dataset", "csv", str(small_dataset / "labels.csv"), "--model", "krumhansl+temperley",
                 "--out", str(out), "--quiet"]) == 2
    assert "not to a template" in capsys.readouterr().err


def test_pca_of_rotated_profiles_is_a_ring_and_figures_are_written(tmp_path):
    from musicssl.evaluation.figures import pca_2d, plot_embedding_pca, plot_keygram
    from musicssl.keys import KEYS

    # pitch-equivariant "embeddings": one profile rotated to each key's position on the circle of fifths
    profile = np.cos(2 * np.pi * 7 * np.arange(12) / 12) + 2
    keys = [k for k in KEYS if k.is_major]
    emb = np.stack([np.roll(profile, k.tonic) for k in keys])
    scores, ratio = pca_2d(emb)
    radii = np.linalg.norm(scores, axis=1)
    assert np.allclose(radii, radii[0]) and ratio.sum() == pytest.approx(1.0)
    angles = np.angle(scores[:, 0] + 1j * scores[:, 1])
    # neighbours on the circle of fifths are neighbours on the ring (30 degrees apart)
    g, d = keys[7], keys[2]
    gap = abs(np.angle(np.exp(1j * (angles[g.tonic] - angles[d.tonic]))))
    assert gap == pytest.approx(np.pi / 6, abs=1e-6)
    paths = plot_embedding_pca(emb, keys, tmp_path / "pca")
    paths += plot_keygram(np.full((5, 24), 1 / 24), np.arange(5) * 2.5, tmp_path / "kg", reference=keys[0])
    assert [p.suffix for p in paths] == [".png", ".svg", ".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError):
        plot_keygram(np.zeros((5, 12)), np.arange(5), tmp_path / "bad")


def test_checkpoints_of_the_same_name_are_told_apart_by_their_folders(tmp_path):
    import shutil

    from musicssl.cli.evaluate import resolve_estimators
    from musicssl.key.checkpoint import shipped_key_models

    source = shipped_key_models()["skey-debian"]
    paths = []
    for folder in ("a/run", "b/run", "c"):
        (tmp_path / folder).mkdir(parents=True)
        paths.append(tmp_path / folder / "model.safetensors")
        shutil.copy(source, paths[-1])
    names = list(resolve_estimators([str(p) for p in paths] + [f"{paths[2]}+temperley", str(paths[2])],
                                    transpositions=1))
    assert names == ["a/run/model", "b/run/model", "c/model", "model+temperley", "c/model#2"]
    assert list(resolve_estimators([str(paths[0])], transpositions=1)) == ["model"]   # alone: just the stem
