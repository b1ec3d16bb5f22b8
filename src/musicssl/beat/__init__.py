"""Beat tracking: Zero-Note Samba (self-supervised activations), onset strength, the DBN decoder.

The public API, importable from here (loaded on first use)::

    from musicssl.beat import load_beat_estimator
    result = load_beat_estimator().estimate_file("song.mp3")   # BeatResult: beats (s), tempo_bpm

Layers: :mod:`~musicssl.beat.features` (audio → activation inputs),
:mod:`~musicssl.beat.estimator` (activation → beats), :mod:`~musicssl.beat.analysis`
(many files → records). Training: :mod:`~musicssl.beat.train`, :mod:`~musicssl.beat.finetune`.
"""

from importlib import import_module

_API = {
    "load_beat_estimator": "estimator", "BeatEstimator": "estimator", "OnsetBeatEstimator": "estimator",
    "BeatResult": "estimator", "DBNBeatTracker": "dbn",
    "analyse_files": "analysis", "BeatOptions": "analysis",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
