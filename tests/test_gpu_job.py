"""The packed GPU job: pack contents and limits, export without a separator, and the CPU rehearsal."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from musicssl.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_job_rehearsal  # noqa: E402


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpujob")
    key_cache, beat_cache, wav = gpu_job_rehearsal.make_caches(root)
    return root, key_cache, beat_cache, wav


def test_rehearsal_smallest_form(caches, tmp_path):
    """pack -> run.sh on CPU (the training path imports no audio library) -> $OUT -> both models load."""
    root, key_cache, beat_cache, wav = caches
    out = gpu_job_rehearsal.pack_and_run(tmp_path, key_cache, beat_cache, 0.4, "t")
    facts = gpu_job_rehearsal.check_out(out)
    assert len(facts["files"]) <= 8
    report = facts["report"]
    assert "| skey | cpu |" in report and "| zerons | cpu |" in report and "n/a" in report
    assert "key_bank.safetensors" in report
    assert gpu_job_rehearsal.global_step(out / "skey_state.ckpt") > 0
    assert gpu_job_rehearsal.global_step(out / "zerons_state.ckpt") > 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("model") and any(r.startswith("skey,") for r in rows)
    key_result, beat_result = gpu_job_rehearsal.load_models(out, wav)
    assert key_result[0]["key"] and "beats" in beat_result[0]
    # the learning curve: every kept step comes back calibrated, the last one equal to the exported model
    from musicssl.gpu_job import export_curve
    from musicssl.key.checkpoint import load_key_model

    lines = []
    written = export_curve(out, tmp_path / "curve", log=lines.append)
    steps = [load_key_model(p).provenance["global_step"] for p in written]
    assert steps == sorted(steps) and steps[-1] == gpu_job_rehearsal.global_step(out / "skey_state.ckpt")
    final = load_key_model(out / "skey.safetensors")
    assert f"calibrated (24 reference signals), step {final.provenance['global_step']}" in report
    # each step's frame check is logged and kept
    assert len(lines) == len(written) and all("frame checked" in x or "FRAME UNCERTAIN" in x for x in lines)
    selected = final.provenance.get("selected")
    if selected is not None:
        # the run's last frame check disagreed (how many steps fit the time box depends on the
        # machine's load), so the job exported the last agreeing step (select: frame_check), and
        # the curve's last snapshot is the last step
        assert selected["last_step"] == steps[-1] > final.provenance["global_step"] == selected["step"]
        assert final.provenance["frame_check"]["agrees"] and not selected["last_frame_check"]["agrees"]
        assert f"step {steps[-1]} uncertain" in report
    if final.provenance["global_step"] in steps:   # the curve's snapshot of the exported step is that model
        same = load_key_model(written[steps.index(final.provenance["global_step"])])
        assert same.calibration == final.calibration
        assert same.provenance["frame_check"] == final.provenance["frame_check"]
        for name, value in final.model.state_dict().items():
            assert torch.equal(same.model.state_dict()[name], value)
    else:
        assert selected is not None                # without a selection the exported step is the last
    partial = tmp_path / "partial"                                          # a model but no curve
    partial.mkdir()
    (partial / "skey.safetensors").write_bytes((out / "skey.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="learning curve"):
        export_curve(partial, tmp_path / "nothing", log=lambda *_: None)


def test_pack_is_keyed_by_content_and_respects_the_size_limit(caches, tmp_path):
    from musicssl.gpu_job import pack
    from musicssl.key.device_data import KeyBank

    root, key_cache, beat_cache, _ = caches
    manifest = pack(tmp_path / "p", key_cache=str(key_cache), beat_cache=str(beat_cache), max_mib=2.5,
                    key_seconds=18.0, log=lambda *_: None)
    assert manifest["total_mib"] <= 2.5 and manifest["key"]["seconds_per_track"] == 18.0
    assert manifest["key"]["tracks"] == 8 and manifest["zerons"]["tracks"] >= 1
    bank = KeyBank.load(tmp_path / "p" / "data" / "key_bank.safetensors")
    assert int(bank.lengths.max()) == int(round(18.0 * 22050 / 2048)) + 1
    assert all(len(i) == 16 and "/" not in i for i in bank.ids)
    for data in (tmp_path / "p" / "data").iterdir():          # no audio path travels
        assert str(root).encode() not in data.read_bytes()
    assert (tmp_path / "p" / "run.sh").stat().st_mode & 0o100
    assert not (tmp_path / "p" / "src" / "musicssl" / "data" / "models").exists()
    # a returned $OUT travels as the next slot's state
    returned = tmp_path / "returned"
    returned.mkdir()
    (returned / "skey_state.ckpt").write_bytes(b"state")
    manifest = pack(tmp_path / "next", key_cache=str(key_cache), beat_cache=str(beat_cache), state=str(returned),
                    log=lambda *_: None)
    assert manifest["state"] == ["skey_state.ckpt"]
    assert (tmp_path / "next" / "state" / "skey_state.ckpt").read_bytes() == b"state"
    with pytest.raises(ConfigError, match="no skey_state"):
        pack(tmp_path / "next2", key_cache=str(key_cache), beat_cache=str(beat_cache), state=str(tmp_path / "p"),
             log=lambda *_: None)
    with pytest.raises(ConfigError, match="not empty"):
        pack(tmp_path / "p", key_cache=str(key_cache), beat_cache=str(beat_cache), log=lambda *_: None)
    with pytest.raises(ConfigError, match="do not fit"):
        pack(tmp_path / "tiny", key_cache=str(key_cache), beat_cache=str(beat_cache), max_mib=0.9,
             log=lambda *_: None)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        pack(tmp_path / "bad", key_cache=str(key_cache), beat_cache=str(beat_cache), key_set=["lr"],
             log=lambda *_: None)


def test_pack_takes_several_key_sources_once_each(caches, tmp_path):
    import json

    from musicssl.gpu_job import pack
    from musicssl.key.device_data import KeyBank

    _, key_cache, beat_cache, _ = caches
    paths = sorted(json.loads((key_cache / "index.json").read_text())["tracks"])
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("path,key\n" + "".join(f"{p},C major\n" for p in paths[:5]))
    second.write_text("path\n" + "".join(f"{p}\n" for p in paths[3:]))
    manifest = pack(tmp_path / "p", key_cache=[str(key_cache), str(key_cache)], key_manifest=[str(first), str(second)],
                    beat_cache=str(beat_cache), max_mib=2.5, key_seconds=18.0, log=lambda *_: None)
    assert manifest["key"]["sources"] == 2 and manifest["key"]["tracks"] == len(paths) == 8
    bank = KeyBank.load(tmp_path / "p" / "data" / "key_bank.safetensors")
    assert sorted(bank.tonic.tolist()) == [-1, -1, -1, 0, 0, 0, 0, 0]      # tracks 3, 4 from the first source
    with pytest.raises(ConfigError, match="one per cache"):
        pack(tmp_path / "q", key_cache=[str(key_cache), str(key_cache)], key_manifest=[str(first)],
             beat_cache=str(beat_cache), log=lambda *_: None)


def test_zerons_export_on_precomputed_reference_matches_the_separating_export(tmp_path):
    from musicssl.beat.model import ZeroNS
    from musicssl.beat.config import PretrainConfig
    from musicssl.beat.train import model_polarity
    from musicssl.beat.checkpoint import load_zerons_model
    from musicssl.gpu_job import export_zerons, zerons_reference_features

    torch.manual_seed(0)
    config = PretrainConfig(width=1 / 16, center_outputs=True)
    model = ZeroNS(width=config.width, dropout=config.dropout).eval()
    perc, rest = zerons_reference_features()
    path, half = export_zerons(model.state_dict(), 12, config, perc, rest, tmp_path / "z.safetensors")
    loaded, meta = load_zerons_model(path)
    assert not half and meta["provenance"]["steps"] == 12
    assert meta["polarity"] == model_polarity(model, config)        # the same calibration as with HPSS
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_report_lists_failures_and_utilisation():
    from musicssl.gpu_job import render_report

    text = render_report({"wall_s": 500.0, "budget_min": 8.5, "utilisation": "mean 71 %",
                          "models": {"skey": {"device": "NVIDIA H100", "steps_this_run": 9000, "global_step": 9000,
                                              "items_per_s": 6100.0, "train_s": 420, "first_loss": 9.1,
                                              "last_loss": 5.2, "export": "calibrated"},
                                     "zerons": {"error": "exit 1"}},
                          "pack": {"key": {"tracks": 406}, "state": [], "files": {"run.sh": 900}}})
    assert "6100.0" in text and "mean 71 %" in text and "failed: exit 1" in text and "tracks 406" in text
    assert len(text.splitlines()) < 60


def test_gpu_job_configs_parse_and_the_zerons_state_fits_one_returned_file():
    import yaml

    from musicssl.beat.model import ZeroNS
    from musicssl.beat.config import PretrainConfig
    from musicssl.gpu_job import MAX_OUT_FILE
    from musicssl.key.config import TrainConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    key = TrainConfig.from_mapping({**yaml.safe_load((configs / "gpu_job_skey.yaml").read_text()), "data": []})
    assert key.data_pipeline == "device" and key.hop_length == 2048 and key.max_minutes is None
    beat = PretrainConfig.from_dict(yaml.safe_load((configs / "gpu_job_zerons.yaml").read_text()))
    assert beat.data_pipeline == "device"
    params = sum(p.numel() for p in ZeroNS(width=beat.width).parameters())
    assert 3 * 4 * params < MAX_OUT_FILE - 2 ** 20        # float32 weights + two AdamW moments + slack
