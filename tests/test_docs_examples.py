"""The Python code blocks of README.md and docs/beats.md run as written, on the
bundled example (``song.mp3`` and friends replaced by its path), so the
documented API cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "musicssl" / "data" / "examples" / "ode_to_joy_d_major.ogg"
SONG_NAMES = re.compile(r"""(["'])(?:song|long)\.(?:mp3|flac|wav|ogg)\1""")


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_has_python_blocks_and_they_name_a_song():
    blocks = python_blocks(ROOT / "README.md")
    assert blocks and all(SONG_NAMES.search(b) for b in blocks)


@pytest.mark.parametrize("block", python_blocks(ROOT / "README.md"), ids=lambda b: b.splitlines()[0])
def test_readme_python_block_runs_on_the_example(block):
    namespace: dict = {}
    exec(compile(SONG_NAMES.sub(repr(str(EXAMPLE)), block), "README.md", "exec"), namespace)
    if "result" in namespace:
        assert namespace["result"].key.format() in ("D major", "D")
    if "beats" in namespace:
        assert namespace["beats"].tempo_bpm is None or namespace["beats"].tempo_bpm > 0


@pytest.mark.parametrize("block", python_blocks(ROOT / "docs" / "beats.md"), ids=lambda b: b.splitlines()[0])
def test_beats_doc_python_block_runs_on_the_example(block):
    samples, sr = soundfile.read(EXAMPLE)
    # the names these blocks leave to the reader: audio, an activation, a checkpoint path (None: shipped)
    namespace = {"samples": samples, "sr": sr, "path": None,
                 "activation": np.clip(np.abs(np.sin(np.arange(1000) / 62.5 * np.pi * 2)) ** 8, 0, 1)}
    exec(compile(SONG_NAMES.sub(repr(str(EXAMPLE)), block), "docs/beats.md", "exec"), namespace)
