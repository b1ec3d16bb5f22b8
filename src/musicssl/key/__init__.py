"""Key estimation: ChromaNet trained by STONE / 24-STONE / S-KEY, template baselines.

The public API, importable from here (loaded on first use, so that importing
one submodule does not load the rest)::

    from musicssl.key import load_estimator
    result = load_estimator("default").estimate_file("song.mp3")   # KeyResult

Layers: :mod:`~musicssl.key.features` (audio → CQT features),
:mod:`~musicssl.key.estimator` (features → probabilities → results),
:mod:`~musicssl.key.analysis` (many files → records), :mod:`~musicssl.key.registry`
(model names → estimators). Training: :mod:`~musicssl.key.train`.
"""

from importlib import import_module

_API = {
    "load_estimator": "registry", "model_names": "registry",
    "KeyEstimator": "estimator", "TemplateKeyEstimator": "estimator",
    "KeyResult": "results", "LocalKey": "results", "KeySegment": "results",
    "KeyFeatures": "features", "compute_features": "features",
    "analyse_files": "analysis", "KeyOptions": "analysis", "TagOptions": "analysis",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
