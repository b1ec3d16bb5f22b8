"""Key training: config, schedule, export, exact resume, two-process DDP (gloo) — tiny models, few steps."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicssl.errors import ConfigError
from musicssl.key.config import TrainConfig
from musicssl.key.train import train
from musicssl.key.lightning import warmup_cosine

REPO = Path(__file__).resolve().parents[1]
SR = 22050
MAJOR = (0, 2, 4, 5, 7, 9, 11)
NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


def _melody(tonic: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    note = int(0.25 * SR)
    t = np.arange(note) / SR
    parts = []
    for j in range(int(seconds / 0.25)):
        f = 440 * 2 ** ((57 + tonic + MAJOR[rng.integers(7)] - 69) / 12)
        parts.append(sum(np.sin(2 * np.pi * h * f * t) / h for h in range(1, 5)) * np.exp(-5 * t))
    x = np.concatenate(parts)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("keycorpus")
    rows = []
    for i in range(8):
        tonic = (i * 5) % 12
        name = f"track{i}.wav"
        sf.write(root / name, _melody(tonic, 6.0, i), SR)
        rows.append(f"{name},{NAMES[tonic]} major")
    (root / "labels.csv").write_text("path,key\n" + "\n".join(rows) + "\n")
    return root


def tiny(tmp_path, corpus, **kw) -> TrainConfig:
    values = dict(data=[str(corpus / "labels.csv")], cache_dir=str(tmp_path.parent / "shared-cache"),
                  out=str(tmp_path / "run"), channels=[2, 3, 4], kernels=[3, 3, 3], drop_path=0.1,
                  segment_seconds=2.0, hop_length=1024, batch_size=2, epochs=2, max_steps=-1,
                  num_workers=0, val_fraction=0.0, progress=False, export=False, checkpoint_every=2,
                  log_every=1, seed=3, warmup_steps=2)
    values.update(kw)
    return TrainConfig.from_mapping(values)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by this test
    return {k: v for k, v in ckpt["state_dict"].items()}


# --------------------------------------------------------------------------- configuration
def test_config_yaml_flags_and_validation(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: [music, list.csv]\ncache_dir: cache\nobjective: stone24\nbatch_size: 16\n")
    cfg = TrainConfig.from_yaml(cfg_file, {"batch_size": 4, "lr": None})
    assert cfg.data == [str(tmp_path / "music"), str(tmp_path / "list.csv")]
    assert cfg.cache_dir == str(tmp_path / "cache") and cfg.objective == "stone24" and cfg.batch_size == 4
    assert cfg.lr == 1e-3
    (tmp_path / "bad.yaml").write_text("batchsize: 3\n")
    with pytest.raises(ConfigError, match="batchsize"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError):
        TrainConfig.from_mapping({"objective": "nope"})
    with pytest.raises(ConfigError):
        TrainConfig.from_mapping({"omega": 4})
    with pytest.raises(ConfigError):
        TrainConfig.from_mapping({"batch_size": 0})


def test_cli_flags_override_config(tmp_path, capsys):
    from musicssl.cli.main import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: music\nepochs: 7\nobjective: skey\n")
    assert main(["train", "--config", str(cfg_file), "--epochs", "3", "--objective", "stone",
                 "--channels", "2", "3", "--kernels", "3", "3", "--compile", "false", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["epochs"] == 3 and printed["objective"] == "stone" and printed["channels"] == [2, 3]
    assert printed["data"] == [str(tmp_path / "music")] and printed["compile"] is False
    assert main(["train", "--objective", "bogus", "--data", "x", "--print-config"]) == 2


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_need_nothing_outside_the_clone(name):
    """No config points at data a user of the repository lacks (../shared, ../work-data):
    the user's --data is all they need; what they write goes under the clone's runs/."""
    text = (REPO / "configs" / name).read_text()
    settings = [line.split("#")[0] for line in text.splitlines()]
    assert not any("shared" in line or "work-data" in line for line in settings), name
    if name.startswith("skey_"):
        cfg = TrainConfig.from_yaml(REPO / "configs" / name)
        assert not cfg.data and cfg.val_manifest is None and cfg.derive_cache_from is None
        assert cfg.objective in ("stone", "stone24", "skey", "supervised", "semi")
        for path in (cfg.cache_dir, cfg.out):
            assert Path(os.path.normpath(path)).is_relative_to(REPO / "runs"), path


def _fresh_clone_with_music(tmp_path, n_tracks: int, seconds: float) -> tuple[Path, Path]:
    """A folder standing for a fresh clone (configs/ only) and a folder of the user's music."""
    clone = tmp_path / "clone"
    (clone / "configs").mkdir(parents=True)
    (clone / "configs" / "skey_tiny_cpu.yaml").write_text((REPO / "configs" / "skey_tiny_cpu.yaml").read_text())
    music = tmp_path / "my music"
    music.mkdir()
    for i in range(n_tracks):
        sf.write(music / f"song{i}.wav", _melody((i * 7) % 12, seconds, i), SR)
    return clone, music


def test_tiny_recipe_runs_from_a_fresh_clone_on_the_users_folder(tmp_path, monkeypatch, capsys):
    from musicssl.cli.main import main

    clone, music = _fresh_clone_with_music(tmp_path, 4, 9.0)
    monkeypatch.chdir(clone)
    code = main(["train", "--config", "configs/skey_tiny_cpu.yaml", "--data", str(music),
                 "--batch-size", "2", "--max-steps", "1", "--export", "false", "--progress", "false",
                 "--val-fraction", "0", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (clone / "runs" / "skey_tiny_cpu" / "checkpoints" / "last.ckpt").is_file()
    assert (clone / "runs" / "cache" / "key-hop1024").is_dir()


def test_too_small_folder_says_which_batch_size_would_fit(tmp_path, monkeypatch, capsys):
    from musicssl.cli.main import main

    clone, music = _fresh_clone_with_music(tmp_path, 3, 9.0)
    monkeypatch.chdir(clone)
    code = main(["train", "--config", "configs/skey_tiny_cpu.yaml", "--data", str(music),
                 "--progress", "false", "--val-fraction", "0", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "3 training tracks give no full batch of 16 per process" in err
    assert "lower --batch-size to 3 or less" in err and "Traceback" not in err


def test_shipped_model_recipe_differs_from_the_default_only_where_documented():
    default = TrainConfig.from_yaml(REPO / "configs" / "skey_default.yaml")
    recipe = TrainConfig.from_yaml(REPO / "configs" / "skey_debian.yaml")
    differ = {k for k in vars(default) if getattr(default, k) != getattr(recipe, k)}
    assert differ == {"mode_rule", "mode_profile", "eq_db", "min_lr_fraction", "ema_decay", "out", "max_minutes",
                      "val_every"}
    assert (recipe.mode_rule, recipe.mode_profile, recipe.eq_db, recipe.ema_decay) == ("thirds", "power", 12.0, 0.999)


def test_derived_cache_and_missing_derive_source(tmp_path, corpus):
    """Training data from a cache derived at hop 2048; a missing source only means computing."""
    from musicssl.key.train import prepare_data

    fine = tiny(tmp_path / "a", corpus, cache_dir=str(tmp_path / "h1024"))
    prepare_data(fine, log=lambda *_: None)
    messages: list[str] = []
    derived = tiny(tmp_path / "b", corpus, hop_length=2048, cache_dir=str(tmp_path / "h2048"),
                   derive_cache_from=str(tmp_path / "h1024"))
    data = prepare_data(derived, log=messages.append)
    assert any("8 tracks subsampled" in m for m in messages)
    assert len(data.train) == 8 and data.cache.frontend_config.hop_length == 2048
    messages.clear()
    computed = tiny(tmp_path / "c", corpus, hop_length=2048, cache_dir=str(tmp_path / "other"),
                    derive_cache_from=str(tmp_path / "nowhere"))
    data = prepare_data(computed, log=messages.append)
    assert any("nothing to derive from" in m for m in messages) and len(data.train) == 8


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(100, 100, 10, min_fraction=0.1) == pytest.approx(0.1)
    # a wall-clock budget ahead of the steps drives the decay; behind it, the steps do
    assert warmup_cosine(20, 100, 10, time_fraction=0.5) == pytest.approx(0.5)
    assert warmup_cosine(55, 100, 10, time_fraction=0.1) == pytest.approx(0.5)
    assert warmup_cosine(5, 100, 10, time_fraction=0.9) == pytest.approx(0.6)   # warm-up unchanged


# --------------------------------------------------------------------------- training runs
def test_train_logs_checkpoints_and_exports_a_usable_model(tmp_path, corpus):
    from musicssl.key.estimator import KeyEstimator

    # a split column, not the hashed split (which depends on this session's tmp paths): 6 train, 2 val
    lines = (corpus / "labels.csv").read_text().splitlines()
    split = corpus / "labels_split.csv"
    split.write_text("\n".join([lines[0] + ",split"] + [f"{row},{'val' if i < 2 else 'train'}"
                                                          for i, row in enumerate(lines[1:])]) + "\n")
    cfg = tiny(tmp_path, corpus, data=[str(split)], objective="skey", max_steps=3, export=True,
               val_manifest=None)
    summary = train(cfg, log=lambda *_: None)
    out = Path(cfg.out)
    assert summary["global_step"] == 3
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "step0000002.ckpt").is_file()
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    columns = set(rows[0])
    for name in ("train/loss", "train/key", "train/mode", "train/balance", "lr", "perf/items_per_s",
                 "perf/audio_hours_per_s", "perf/data_wait_share", "val/loss", "val/frame_check"):
        assert name in columns, name
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(np.isfinite(losses))
    calibration = summary["calibration"]
    assert calibration["n_rows"] == 2 and set(calibration["row_modes"]) == {"major", "minor"}
    # the frame is checked on random progressions and the check kept with the model
    check = calibration["frame_check"]
    assert isinstance(check["agrees"], bool) and set(check["progressions"]["row_modes"]) == {"major", "minor"}
    from musicssl.key.checkpoint import load_key_model
    assert load_key_model(out / "model.safetensors").provenance["frame_check"] == check
    estimator = KeyEstimator.from_checkpoint(out / "model.safetensors")
    assert estimator.frontend_config.hop_length == 1024
    result = estimator.estimate_file(corpus / "track0.wav")
    assert result.probabilities.shape == (24,) and abs(result.probabilities.sum() - 1) < 1e-4

    # an intermediate training checkpoint exports to the same kind of model (weights_only read)
    from musicssl.key.checkpoint import load_key_model
    from musicssl.key.train import export_training_checkpoint, load_training_checkpoint

    module, step = load_training_checkpoint(out / "checkpoints" / "step0000002.ckpt")
    assert step == 2 and module.model.n_rows == 2
    export_training_checkpoint(out / "checkpoints" / "last.ckpt", tmp_path / "last.safetensors")
    exported = load_key_model(tmp_path / "last.safetensors")
    final = load_key_model(out / "model.safetensors")
    for name, value in final.model.state_dict().items():
        assert torch.equal(value, exported.model.state_dict()[name]), name
    assert exported.provenance["checkpoint_step"] == 3


def test_ema_update_rule_and_export(tmp_path, corpus):
    from musicssl.key.checkpoint import load_key_model
    from musicssl.key.lightning import KeyTrainingModule
    from musicssl.key.train import load_training_checkpoint

    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig.from_mapping({"ema_decay": 1.0})
    # the update rule, by hand: d = min(decay, (1 + step) / (10 + step))
    module = KeyTrainingModule(tiny(tmp_path / "unit", corpus, ema_decay=0.9).to_dict())
    assert KeyTrainingModule(tiny(tmp_path / "off", corpus).to_dict()).ema is None
    before = {k: v.clone() for k, v in module.ema.state_dict().items()}
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module._update_ema()                                   # global_step 0 -> d = 0.1
    for name, p in module.model.named_parameters():
        assert torch.allclose(module.ema.state_dict()[name], 0.1 * before[name] + 0.9 * p), name
    # a run keeps it in its checkpoints and exports it, not the live weights
    cfg = tiny(tmp_path, corpus, objective="skey", max_steps=4, epochs=5, export=True, ema_decay=0.9)
    train(cfg, log=lambda *_: None)
    trained, _ = load_training_checkpoint(Path(cfg.out) / "checkpoints" / "last.ckpt")
    exported = load_key_model(Path(cfg.out) / "model.safetensors").model.state_dict()
    live, ema = trained.model.state_dict(), trained.ema.state_dict()
    weights = [k for k in live if k.endswith("weight")]
    assert any(not torch.equal(live[k], ema[k]) for k in weights)
    for k in weights:
        assert torch.equal(exported[k], ema[k]), k


class _Kill(RuntimeError):
    pass


def test_resume_after_interruption_matches_uninterrupted(tmp_path, corpus):
    import lightning.pytorch as pl

    # 8 tracks, batch 2 -> 4 steps per epoch, 2 epochs = 8 steps; checkpoints every 3 steps;
    # killed after step 5, resumed from the step-3 checkpoint (mid-epoch 1)
    full = tiny(tmp_path / "full", corpus, objective="skey", checkpoint_every=3)
    train(full, log=lambda *_: None)

    class KillAt(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 5:
                raise _Kill("simulated crash")

    part = tiny(tmp_path / "part", corpus, objective="skey", checkpoint_every=3)
    with pytest.raises(_Kill):
        train(part, callbacks=[KillAt()], log=lambda *_: None)
    ckpt = Path(part.out) / "checkpoints" / "step0000003.ckpt"
    assert ckpt.is_file()
    resumed = tiny(tmp_path / "part", corpus, objective="skey", checkpoint_every=3, resume=str(ckpt))
    summary = train(resumed, log=lambda *_: None)
    assert summary["global_step"] == 8
    a = _weights(Path(full.out) / "checkpoints" / "last.ckpt")
    b = _weights(Path(part.out) / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and a different seed really changes the result (the comparison can fail)
    other = tiny(tmp_path / "other", corpus, objective="skey", seed=4, max_steps=8)
    train(other, log=lambda *_: None)
    c = _weights(Path(other.out) / "checkpoints" / "last.ckpt")
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


@pytest.mark.parametrize("objective", ["stone", "supervised", "semi"])
def test_other_objectives_train(tmp_path, corpus, objective):
    cfg = tiny(tmp_path, corpus, objective=objective, max_steps=2, supervised_rows=2)
    summary = train(cfg, log=lambda *_: None)
    assert summary["global_step"] == 2
    assert np.isfinite(summary["metrics"]["train/loss"])


def test_skey_project_variants_train_and_log_the_tonic_term(tmp_path, corpus):
    cfg = tiny(tmp_path, corpus, objective="skey", max_steps=2, mode_rule="triads", mode_profile="power",
               tonic_weight=0.5)
    assert cfg.objective_kwargs()["tonic_weight"] == 0.5
    summary = train(cfg, log=lambda *_: None)
    assert summary["global_step"] == 2
    assert np.isfinite(summary["metrics"]["train/tonic"]) and summary["metrics"]["train/tonic"] > 0


DDP_DRIVER = r'''
import json, sys
import lightning.pytorch as pl
from musicssl.key.config import TrainConfig
from musicssl.key.train import train

cfg = TrainConfig.from_mapping(json.loads(sys.argv[1]))
seen = []

class Record(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        seen.extend(int(i) for i in batch["index"])

    def on_train_end(self, trainer, module):
        weights = {k: v.flatten().tolist() for k, v in module.model.state_dict().items()}
        with open(f"{sys.argv[2]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"seen": seen, "weights": weights, "world": trainer.world_size}, f)

train(cfg, callbacks=[Record()], log=lambda *_: None)
'''


def test_ddp_two_cpu_processes_gloo(tmp_path, corpus):
    cfg = tiny(tmp_path, corpus, objective="skey", accelerator="cpu", devices=2, strategy="ddp",
               max_steps=-1, epochs=1, batch_size=2, threads=1)
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(driver), json.dumps(cfg.to_dict()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert len(r0["seen"]) == len(r1["seen"]) == 4          # one epoch: 4 tracks per rank, 2 steps of 2
    assert not set(r0["seen"]) & set(r1["seen"])             # each rank saw different tracks
    assert r0["weights"].keys() == r1["weights"].keys()
    for k in r0["weights"]:
        assert np.allclose(r0["weights"][k], r1["weights"][k], rtol=0, atol=0), k


def test_train_cli_keeps_stdout_for_results_and_shows_no_advert(tmp_path, corpus, capfd):
    """Lightning's progress bar goes to stderr, its litlogger tip nowhere; stdout holds the model path."""
    from musicssl.cli.main import main

    code = main(["train", "--data", str(corpus / "labels.csv"), "--cache-dir", str(tmp_path.parent / "shared-cache"),
                 "--out", str(tmp_path / "run"), "--channels", "2", "3", "4", "--kernels", "3", "3", "3",
                 "--segment-seconds", "2", "--hop-length", "1024", "--batch-size", "2", "--max-steps", "2",
                 "--num-workers", "0", "--val-fraction", "0", "--val-manifest", "", "--progress", "true",
                 "--checkpoint-every", "2"])
    out, err = capfd.readouterr()
    assert code == 0
    assert out.strip() == str(tmp_path / "run" / "model.safetensors")
    assert "Epoch 0" in err and "litlogger" not in err and "litlogger" not in out


def test_device_pipeline_trains_and_resumes_exactly(tmp_path, corpus):
    """data_pipeline: device (whole cache on the training device): same resume guarantee as the loader path."""
    import lightning.pytorch as pl

    full = tiny(tmp_path / "full", corpus, objective="skey", checkpoint_every=3, data_pipeline="device", eq_db=6.0)
    train(full, log=lambda *_: None)

    class KillAt(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            assert batch["views"].shape[:2] == (2, 3)
            if trainer.global_step == 5:
                raise _Kill("simulated crash")

    part = tiny(tmp_path / "part", corpus, objective="skey", checkpoint_every=3, data_pipeline="device", eq_db=6.0)
    with pytest.raises(_Kill):
        train(part, callbacks=[KillAt()], log=lambda *_: None)
    ckpt = Path(part.out) / "checkpoints" / "step0000003.ckpt"
    resumed = tiny(tmp_path / "part", corpus, objective="skey", checkpoint_every=3, data_pipeline="device",
                   eq_db=6.0, resume=str(ckpt))
    assert train(resumed, log=lambda *_: None)["global_step"] == 8
    a = _weights(Path(full.out) / "checkpoints" / "last.ckpt")
    b = _weights(Path(part.out) / "checkpoints" / "last.ckpt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_packed_bank_replaces_data_and_cache(tmp_path, corpus):
    from musicssl.key.dataset import FeatureCache
    from musicssl.io.tracks import gather_tracks
    from musicssl.key.device_data import KeyBank

    cfg = tiny(tmp_path / "a", corpus, max_steps=2, export=True)
    train(cfg, log=lambda *_: None)                      # builds the shared cache
    cache = FeatureCache(cfg.cache_dir, cfg.frontend())
    tracks = [t for t in gather_tracks(str(corpus / "labels.csv"))]
    for t in tracks:
        t.path = str(Path(t.path).resolve())
    bank = KeyBank.from_cache(cache, tracks, split=["train"] * 7 + ["val"])
    assert len(bank) == 8 and bank.split.count("val") == 1
    bank_file = bank.save(tmp_path / "key_bank.safetensors")
    packed = tiny(tmp_path / "b", corpus, data=[], cache_dir=None, bank=str(bank_file), max_steps=3, export=True,
                  val_every=1, epochs=1)
    summary = train(packed, log=lambda *_: None)
    assert summary["global_step"] == 3 and Path(summary["model"]).is_file()
    assert "val/loss" in summary["metrics"]
    with pytest.raises(ConfigError):
        TrainConfig(data=["x"], data_pipeline="gpu")


def test_running_vote_is_kept_in_checkpoints_and_resumes(tmp_path, corpus):
    from musicssl.key.lightning import KeyTrainingModule

    cfg = tiny(tmp_path / "vote", corpus, objective="skey", mode_rule="thirds", mode_profile="power",
               shift_momentum=0.9, max_steps=3)
    summary = train(cfg, log=lambda *_: None)
    assert summary["global_step"] == 3
    assert 0 <= summary["metrics"]["train/tonic_shift"] <= 11
    ballot = _weights(Path(cfg.out) / "checkpoints" / "last.ckpt")["shift_scores"]
    assert ballot.shape == (12,) and bool((ballot > 0).all())      # profiles are positive: voted
    # a run without the running vote has no ballot; resuming it with one starts an empty ballot
    plain = tiny(tmp_path / "plain", corpus, objective="skey", mode_rule="thirds", max_steps=2)
    train(plain, log=lambda *_: None)
    assert "shift_scores" not in _weights(Path(plain.out) / "checkpoints" / "last.ckpt")
    module = KeyTrainingModule(cfg.to_dict())
    state = {"state_dict": {}}
    module.on_load_checkpoint(state)
    assert torch.equal(state["state_dict"]["shift_scores"], torch.zeros(12))
    resumed = tiny(tmp_path / "plain", corpus, objective="skey", mode_rule="thirds", shift_momentum=0.9,
                   max_steps=4, resume=str(Path(plain.out) / "checkpoints" / "last.ckpt"))
    assert train(resumed, log=lambda *_: None)["global_step"] == 4
    assert bool((_weights(Path(plain.out) / "checkpoints" / "last.ckpt")["shift_scores"] > 0).all())


def test_labelled_validation_calibrates_on_the_frame_checkers_signals(shared_fixtures):
    from musicssl.key.checkpoint import load_key_model
    from musicssl.key.lightning import LabelledValidation

    loaded = load_key_model(shared_fixtures / "skey.pt")
    validation = LabelledValidation([], cache=None, frontend_config=loaded.frontend_config)
    assert validation.evaluate(loaded.model, "cpu")["calib_acc"] >= 0.9     # no clips: the calibration only
    assert validation.frames.logcqt("reference").shape[0] == 24


# --------------------------------------------------------------------------- choosing the step
def test_frame_selection_exports_the_last_agreeing_step_and_resumes_its_choice(tmp_path, corpus, monkeypatch):
    from musicssl.key import train as train_module
    from musicssl.key.checkpoint import load_key_model
    from musicssl.key.lightning import FrameChecker

    with pytest.raises(ConfigError, match="select must be"):
        TrainConfig.from_mapping({"select": "best"})
    # the frame check agrees at steps 1 and 2, then no more (a drifting run)
    seen = []

    def scripted_check(self, model, device="cpu"):
        seen.append(len(seen) + 1)
        return {"agrees": len(seen) <= 2}

    monkeypatch.setattr(FrameChecker, "__call__", scripted_check)
    real_check = train_module.check_model_frame
    answers = iter([False, True])                  # export: the last step disagrees, step 2 agrees

    def export_check(*args, **kwargs):
        return {**real_check(*args, **kwargs), "agrees": next(answers)}

    monkeypatch.setattr(train_module, "check_model_frame", export_check)
    lines = []
    cfg = tiny(tmp_path, corpus, objective="skey", max_steps=4, export=True, select_every=1)
    summary = train(cfg, log=lines.append)
    out = Path(cfg.out)
    assert summary["global_step"] == 4 and seen == [1, 2, 3, 4]
    assert summary["frame_history"] == [[1, True], [2, True], [3, False], [4, False]]
    assert summary["calibration"]["selected_step"] == 2
    assert any("weights of step 2" in line for line in lines)
    with open(out / "logs" / "metrics.csv") as handle:
        logged = [float(r["train/frame_check"]) for r in csv.DictReader(handle) if r.get("train/frame_check")]
    assert logged == [1.0, 1.0, 0.0, 0.0]
    # the exported weights are step 2's (the callback runs before that step's checkpoint is written)
    exported = load_key_model(out / "model.safetensors")
    step2 = _weights(out / "checkpoints" / "step0000002.ckpt")
    last = _weights(out / "checkpoints" / "last.ckpt")
    state = exported.model.state_dict()
    assert all(torch.equal(v, step2[f"model.{k}"]) for k, v in state.items())
    assert any(not torch.equal(v, last[f"model.{k}"]) for k, v in state.items() if k.endswith("weight"))
    chosen = exported.provenance["selected"]
    assert chosen["step"] == 2 and chosen["last_step"] == 4 and exported.provenance["global_step"] == 2
    assert chosen["last_frame_check"]["agrees"] is False and chosen["history"][2] == [3, False]
    # the choice travels in training checkpoints (read without unpickling code)
    saved = torch.load(out / "checkpoints" / "step0000004.ckpt", map_location="cpu", weights_only=True)
    kept = saved["callbacks"]["FrameSelection"]
    assert kept["step"] == 2 and kept["history"] == [[1, 1], [2, 1], [3, 0], [4, 0]]
    # resumed at step 4 to step 6: the choice made before the interruption still stands
    seen.clear()
    seen.extend([1, 2, 3, 4])
    answers = iter([False, True])
    resumed = tiny(tmp_path, corpus, objective="skey", max_steps=6, export=True, select_every=1,
                   resume=str(out / "checkpoints" / "step0000004.ckpt"))
    summary = train(resumed, log=lambda *_: None)
    assert summary["global_step"] == 6 and summary["calibration"]["selected_step"] == 2
    assert [s for s, _ in summary["frame_history"]] == [1, 2, 3, 4, 5, 6]
    # select: last writes the last step whatever the check says
    answers = iter([False])
    plain = tiny(tmp_path / "last", corpus, objective="skey", max_steps=4, export=True, select="last")
    summary = train(plain, log=lambda *_: None)
    assert summary["calibration"]["selected_step"] is None and "frame_history" not in summary
    assert "selected" not in load_key_model(Path(plain.out) / "model.safetensors").provenance


def test_auto_precision_uses_bf16_on_a_cpu_only_where_it_is_native(monkeypatch):
    from musicssl.key import train as train_module

    cpu = TrainConfig.from_mapping({"accelerator": "cpu"})
    asked = TrainConfig.from_mapping({"accelerator": "cpu", "precision": "bf16-mixed"})
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert train_module._precision(cpu, "cpu") == ("bf16-mixed" if native else "32-true")
        assert train_module._precision(asked, "cpu") == "bf16-mixed"          # what was asked for is kept
        note = train_module.precision_note(asked)
        assert (note is None) == native
        assert train_module.precision_note(cpu) is None
    assert "32-true" in note and "slower" in note
    for name in ("skey_default", "skey_debian", "skey_band_finetune", "gpu_job_skey"):
        assert TrainConfig.from_yaml(REPO / "configs" / f"{name}.yaml").precision == "auto", name
