"""Pure helpers of scripts/render_lmms.py on small hand-written LMMS projects (no lmms needed)."""

from __future__ import annotations

import importlib.util
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest

from musicssl.evaluation.beat_annotations import format_beat_annotation, parse_beat_annotation

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render_lmms.py"
_spec = importlib.util.spec_from_file_location("render_lmms", _SCRIPT)
render_lmms = importlib.util.module_from_spec(_spec)
sys.modules["render_lmms"] = render_lmms
_spec.loader.exec_module(render_lmms)


def project_xml(head: str = '<head bpm="128" timesig_numerator="4" timesig_denominator="4" '
                             'mastervol="100" masterpitch="0"/>',
                global_patterns: str = '<automationpattern name="Tempo" pos="0" len="192">'
                                       '<time pos="0" value="140"/></automationpattern>',
                song_tracks: str = "") -> str:
    """A minimal LMMS 1.2 song: a head, song tracks and the global automation track."""
    return f"""<?xml version="1.0"?>
<!DOCTYPE lmms-project>
<lmms-project creator="LMMS" creatorversion="1.2.0" type="song" version="1.0">
  {head}
  <song>
    <trackcontainer type="song">{song_tracks}</trackcontainer>
    <track type="6" name="Automation track">{global_patterns}</track>
    <timeline lp0pos="0" lp1pos="192" lpstate="0"/>
  </song>
</lmms-project>"""


def root_of(text: str) -> ET.Element:
    return render_lmms.decode_project_bytes(text.encode(), compressed=False)


def test_mmpz_decoding_checks_the_length_prefix():
    xml = project_xml().encode()
    packed = struct.pack(">I", len(xml)) + zlib.compress(xml)
    root = render_lmms.decode_project_bytes(packed, compressed=True)
    assert root.find("head").get("bpm") == "128"
    bad = struct.pack(">I", len(xml) + 1) + zlib.compress(xml)
    with pytest.raises(render_lmms.ProjectError, match="length prefix"):
        render_lmms.decode_project_bytes(bad, compressed=True)
    with pytest.raises(render_lmms.ProjectError, match="zlib"):
        render_lmms.decode_project_bytes(b"\0\0\0\5hello", compressed=True)


def test_read_project_by_suffix(tmp_path):
    xml = project_xml().encode()
    (tmp_path / "a.mmp").write_bytes(xml)
    (tmp_path / "b.mmpz").write_bytes(struct.pack(">I", len(xml)) + zlib.compress(xml))
    for name in ("a.mmp", "b.mmpz"):
        assert render_lmms.read_project(tmp_path / name).find("head").get("bpm") == "128"
    assert [p.name for p in render_lmms.find_projects([tmp_path])] == ["a.mmp", "b.mmpz"]


def test_unconnected_tempo_pattern_is_ignored():
    # the demos carry a "Tempo" pattern with a point but no <object>: it drives nothing
    info = render_lmms.project_info(root_of(project_xml()), "demo")
    assert (info.bpm, info.numerator, info.denominator) == (128.0, 4, 4)
    assert info.tempo_automation is None and info.skip_reason() is None
    assert info.seconds_per_beat == pytest.approx(60 / 128)


def test_automated_tempo_is_skipped():
    head = ('<head timesig_numerator="4" timesig_denominator="4">'
            '<bpm value="120" id="42"/></head>')
    track = ('<track type="5" name="tempo ramp"><automationpattern name="ramp" pos="768" len="384">'
             '<time pos="0" value="120"/><time pos="192" value="150"/><object id="42"/>'
             '</automationpattern></track>')
    info = render_lmms.project_info(root_of(project_xml(head=head, song_tracks=track)), "ramp")
    assert info.bpm == 120.0
    assert info.skip_reason() == "tempo automation (120-150 BPM)"


def test_controller_driven_tempo_is_skipped():
    head = ('<head timesig_numerator="4" timesig_denominator="4">'
            '<bpm value="120" id="7"><connection><ControllerConnection id="0"/></connection></bpm>'
            '</head>')
    info = render_lmms.project_info(root_of(project_xml(head=head)), "lfo")
    assert info.skip_reason() == "tempo driven by a controller"


def test_connected_global_tempo_pattern_at_the_head_tempo_is_constant():
    same = ('<automationpattern name="Tempo" pos="0" len="192"><time pos="0" value="128"/>'
            '<object id="99"/></automationpattern>')
    assert render_lmms.project_info(root_of(project_xml(global_patterns=same)), "x").skip_reason() is None
    other = same.replace('value="128"', 'value="100"')
    assert "tempo automation" in render_lmms.project_info(
        root_of(project_xml(global_patterns=other)), "x").skip_reason()


@pytest.mark.parametrize("num,den,skipped", [(4, 4, False), (8, 4, False), (3, 4, False),
                                             (1, 1, True), (6, 8, True)])
def test_time_signature_must_be_over_four(num, den, skipped):
    head = f'<head bpm="100" timesig_numerator="{num}" timesig_denominator="{den}"/>'
    reason = render_lmms.project_info(root_of(project_xml(head=head)), "ts").skip_reason()
    assert (reason is not None) == skipped
    if skipped:
        assert f"{num}/{den}" in reason


def test_bad_tempo_is_a_project_error():
    with pytest.raises(render_lmms.ProjectError, match="tempo"):
        render_lmms.project_info(root_of(project_xml(head='<head bpm="fast"/>')), "bad")
    with pytest.raises(render_lmms.ProjectError, match="no <head>"):
        render_lmms.project_info(root_of("<lmms-project><song/></lmms-project>"), "bad")


def test_truncate_song_keeps_early_clips_and_beat_pattern_contents():
    tracks = ('<track type="0" name="lead"><pattern pos="0" len="192"/><pattern pos="3840" len="192"/></track>'
              '<track type="1" name="beat"><bbtrack><trackcontainer type="bbtrackcontainer">'
              '<track type="0" name="kick"><pattern pos="9999" len="192"/></track>'
              '</trackcontainer></bbtrack><bbtco pos="192" len="192"/><bbtco pos="4000" len="192"/></track>')
    root = root_of(project_xml(song_tracks=tracks))
    assert render_lmms.truncate_song(root, 3840) == 2
    song_tracks = root.find("song/trackcontainer")
    assert [int(p.get("pos")) for p in song_tracks.iter("pattern")] == [0, 9999]
    assert [int(b.get("pos")) for b in song_tracks.iter("bbtco")] == [192]
    assert len(root.find("song/track").findall("automationpattern")) == 1


def test_beat_grid_and_its_file_format():
    times, numbers = render_lmms.beat_grid(120.0, 3, 2.6)
    np.testing.assert_allclose(times, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert numbers.tolist() == [1, 2, 3, 1, 2, 3]
    times, _ = render_lmms.beat_grid(120.0, 4, 2.5)
    assert times[-1] == pytest.approx(2.0)            # a beat at the very end is outside
    parsed = parse_beat_annotation(format_beat_annotation(*render_lmms.beat_grid(128.0, 4, 10.0), decimals=6))
    np.testing.assert_allclose(parsed.times, np.arange(22) * 60 / 128, atol=1e-6)
    assert parsed.beat_in_bar.tolist()[:5] == [1, 2, 3, 4, 1]


def test_sound_span_finds_intro_and_tail_silence():
    sr = 8000
    y = np.zeros(10 * sr, dtype=np.float32)
    y[3 * sr: 7 * sr] = 0.1 * np.sin(np.arange(4 * sr) * 0.3)
    start, end = render_lmms.sound_span(y, sr)
    assert start == pytest.approx(3.0, abs=0.06) and end == pytest.approx(7.0, abs=0.06)
    assert render_lmms.sound_span(np.zeros(sr, dtype=np.float32), sr) is None
