"""The package's layering (docs/ARCHITECTURE.md): no import cycle, no import running
back up a layer, key and beat independent, Lightning only in the training modules."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "musicssl"

#: layer of each top-level part, bottom first (docs/ARCHITECTURE.md, "Layers")
LAYERS = {
    "errors": 1, "keys": 1, "backends": 1, "data": 1,
    "io": 2, "dsp": 2, "runner": 2, "distributed": 2, "trainer_output": 2,
    "evaluation": 3,
    "key": 4, "beat": 4,
    "export": 5, "gpu_job": 5, "serve": 5,
    "cli": 6,
}
TRAINING_ONLY = {"lightning", "lightning.pytorch"}
TRAINING_MODULES = {"key.lightning", "key.train", "beat.lightning", "beat.train", "trainer_output", "gpu_job"}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__").removesuffix("__init__"): p
            for p in SRC.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """``(imported module relative to musicssl, at module level)`` for each import of the package."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("musicssl"):
            base = node.module.removeprefix("musicssl").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}".lstrip(".")
                names.append(sub if sub in modules else base)
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("musicssl").lstrip(".") for a in node.names if a.name.startswith("musicssl")]
        found += [(n, id(node) in top) for n in names]
    return found


def _third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]] if module else 0


def test_every_part_has_a_layer():
    parts = {m.split(".")[0] for m in _modules() if m}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_no_import_runs_up_a_layer_and_key_and_beat_are_independent():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for target, _ in _imports(path, modules):
            if target and name and _layer(target) > _layer(name):
                wrong.append(f"{name} -> {target}")
            if {name.split(".")[0], target.split(".")[0]} == {"key", "beat"}:
                wrong.append(f"{name} -> {target}")
    assert not wrong, wrong


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {t for t, _ in _imports(path, modules) if t in modules and t != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_lightning_is_imported_by_the_training_modules_only():
    users = {name for name, path in _modules().items() if _third_party(path) & TRAINING_ONLY}
    assert users <= TRAINING_MODULES, users - TRAINING_MODULES


def test_analysing_keys_loads_neither_lightning_nor_training_code():
    code = ("import sys; from musicssl.cli import key, beats; from musicssl.key import analysis; "
            "from musicssl.beat import analysis as b; "
            "print(sorted(m for m in sys.modules if m.startswith(('lightning', 'musicssl.key.train', "
            "'musicssl.beat.train', 'musicssl.key.lightning'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_default_key_analysis_runs_without_librosa_numba_or_scipy_signal(tmp_path):
    """Start-up (issue #17): the default ``musicssl key`` path (decoding, tuning, the no-key
    measurements, the chroma prior, the network) must not pull in librosa, numba or
    scipy.signal, which cost seconds to import."""
    import soundfile as sf

    t = np.arange(3 * 22050) / 22050
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    code = ("import sys; from musicssl.cli.main import main; "
            f"rc = main(['key', {str(tmp_path / 'a.wav')!r}]); "
            "print('LOADED', rc, sorted(m for m in sys.modules if m.split('.')[0] in ('librosa', 'numba', 'sklearn') "
            "or m.startswith('scipy.signal')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LOADED 0 []"
