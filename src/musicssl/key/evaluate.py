"""Run key estimators over a labelled dataset (:func:`evaluate`): each recording's
features are computed once per front end, in worker processes, and every estimator
scores them; summaries and reports are :mod:`musicssl.evaluation.key_report`."""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from musicssl.dsp.cqt import crop_bins, log_compress
from musicssl.evaluation.datasets import Dataset
from musicssl.evaluation.key_metrics import (
    score_key,
)
from musicssl.evaluation.key_report import Evaluation, ItemResult, Prediction
from musicssl.key.features import compute_features
from musicssl.runner import run_batch


def _prepare_item(path: str, configs: tuple, spans: Mapping[str, tuple[float, float | None]],
                  device: str = "cpu", tuning: str | float = "compensate") -> list:
    """Features of one file for each distinct ``(front-end config, feature options)``
    (runs in workers)."""

    offset, duration = spans.get(path, (0.0, None))
    return [compute_features(path, config, device=device, offset=offset, duration=duration, tuning=tuning,
                             **dict(options))
            for config, options in configs]


def _embedding(estimator, features) -> np.ndarray | None:
    """ChromaNet ``embed`` of a whole recording ``(3, 12)``, or None for models without one."""
    model = getattr(estimator, "model", None)
    embed = getattr(model, "embed", None)
    if embed is None:
        return None
    import torch

    config = estimator.frontend_config
    device = getattr(estimator, "device", "cpu")
    with torch.inference_mode():
        mag = torch.as_tensor(np.asarray(features.magnitude))[None, None].to(device)
        x = crop_bins(log_compress(mag, config.top_db), 0, config.crop_bins)
        return embed(x).float().cpu().numpy()[0]


def evaluate(dataset: Dataset, estimators: Mapping[str, Any], *, jobs: int = 1, device: str = "cpu",
             batch_size: int = 8, progress: bool = False, embeddings: bool = False,
             local_ids: Sequence[str] = (), window_s: float = 15.0, hop_s: float = 2.5,
             tuning: str | float = "compensate") -> Evaluation:
    """Run ``estimators`` (name → object with ``frontend_config`` and ``estimate_features``)
    on every item of ``dataset``.

    ``embeddings``: also keep the network embedding of every item (models with
    ``model.embed``). ``local_ids``: item ids (or audio paths) whose local keys
    (``window_s``/``hop_s``) are kept for key-grams. ``tuning``: as
    :func:`musicssl.key.estimator.compute_features` (``"off"``: the papers' pipeline).
    """

    names = list(estimators)
    if not names:
        raise ValueError("no estimators to evaluate")
    # one feature set per front end, with every option any of its estimators needs
    front_ends: list = []
    options: dict = {}
    config_of: dict[str, int] = {}
    for name, est in estimators.items():
        if est.frontend_config not in front_ends:
            front_ends.append(est.frontend_config)
        options.setdefault(est.frontend_config, {}).update(getattr(est, "feature_options", {}))
        config_of[name] = front_ends.index(est.frontend_config)
    configs = [(fe, tuple(sorted(options[fe].items()))) for fe in front_ends]
    items = list(dataset.items)
    by_path = {str(i.path): i for i in items}
    spans = {str(i.path): (i.offset, i.duration) for i in items}
    wanted_local = set(local_ids)

    def finish(batch: list[tuple[str, list]]) -> list[dict]:
        records = [{"path": path, "results": {}, "embeddings": {}, "local": {}} for path, _ in batch]
        for name, est in estimators.items():
            feats = [payload[config_of[name]] for _, payload in batch]
            for record, result in zip(records, est.estimate_features(feats)):
                record["results"][name] = result
            for record, (path, _), f in zip(records, batch, feats):
                item = by_path[path]
                if embeddings:
                    e = _embedding(est, f)
                    if e is not None:
                        record["embeddings"][name] = e
                if item.id in wanted_local or path in wanted_local:
                    local = est.local_keys(f, window_s, hop_s)
                    times = np.array([(w.start_s + w.end_s) / 2 for w in local])
                    record["local"][name] = (times, np.stack([w.probabilities for w in local]))
        return records

    prepare = partial(_prepare_item, configs=tuple(configs), spans=spans,
                      device=device if jobs <= 1 else "cpu", tuning=tuning)
    records = run_batch([str(i.path) for i in items], prepare, finish, jobs=jobs, batch_size=batch_size,
                        progress=progress, description=dataset.name)
    results: list[ItemResult] = []
    for item, record in zip(items, records):
        out = ItemResult(item)
        if record.get("error"):
            out.error = f"{record['error']}: {record.get('message', '')}"
        else:
            for name, result in record["results"].items():
                out.predictions[name] = Prediction(result.key, np.asarray(result.probabilities),
                                                   float(result.confidence), score_key(item.key, result.key))
            out.embeddings = record["embeddings"]
            out.local = record["local"]
        results.append(out)
    settings = {name: {"transpositions": est.transpositions, "prior": est.prior}
                for name, est in estimators.items() if hasattr(est, "transpositions")}
    return Evaluation(dataset, names, results, settings)
