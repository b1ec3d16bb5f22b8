"""Run key estimators over a labelled dataset; summarise; write JSON and Markdown.

:func:`evaluate` computes each recording's CQT once (in ``jobs`` worker
processes, via :func:`musicssl.batch.run_batch`) and runs every estimator on
it, so comparing several models costs one decode per file. A file that cannot
be analysed becomes a failure record; the summary says how many items were
scored. Optional extras per item: the network's embedding (for the PCA
figure) and local keys (for a key-gram).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from musicssl.evaluation.datasets import Dataset, DatasetItem
from musicssl.evaluation.key_metrics import (
    SCORE_LABELS,
    SCORE_NAMES,
    KeyScore,
    KeySummary,
    confusion_matrix,
    score_key,
    summarize,
)
from musicssl.keys import KEY_LABELS, Key


@dataclass
class Prediction:
    """One estimator's answer for one item and its scores."""

    key: Key
    probabilities: np.ndarray  # (24,) canonical order
    confidence: float
    score: KeyScore


@dataclass
class ItemResult:
    """Everything computed for one dataset item."""

    item: DatasetItem
    predictions: dict[str, Prediction] = field(default_factory=dict)
    error: str | None = None                                             # analysis failed
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)      # name -> (3, 12)
    local: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (times, (T, 24))


@dataclass
class Evaluation:
    """Results of several estimators on one dataset."""

    dataset: Dataset
    names: list[str]
    items: list[ItemResult]
    #: per estimator, how it was run (e.g. ``{"transpositions": 12, "prior": None}`` for network models)
    settings: dict[str, dict] = field(default_factory=dict)

    def scored(self, name: str) -> list[ItemResult]:
        return [r for r in self.items if name in r.predictions]

    @property
    def failures(self) -> list[ItemResult]:
        return [r for r in self.items if r.error is not None]

    def summary(self, name: str) -> KeySummary:
        """Summary of estimator ``name`` over its scored items (per group when grouped)."""
        results = self.scored(name)
        groups = [r.item.group for r in results]
        return summarize([r.predictions[name].score for r in results],
                         groups if any(g is not None for g in groups) else None)

    def confusion(self, name: str) -> np.ndarray:
        """``(24, 24)`` counts, rows reference, columns estimate, canonical order."""
        results = self.scored(name)
        return confusion_matrix([r.item.key for r in results], [r.predictions[name].key for r in results])

    # --- serialisation
    def to_dict(self) -> dict:
        """JSON-ready: dataset bookkeeping, per-estimator summaries, per-item predictions."""
        ds = self.dataset
        out: dict[str, Any] = {
            "dataset": {
                "name": ds.name, "root": str(ds.root), "group_field": ds.group_name,
                "items": len(ds.items), "missing_audio": [str(i.path) for i in ds.missing],
                "skipped_annotations": [{"where": s.where, "reason": s.reason} for s in ds.skipped],
            },
            "metrics": {name: SCORE_LABELS[name] for name in SCORE_NAMES},
            "estimators": list(self.names),
            "settings": {name: dict(self.settings.get(name, {})) for name in self.names},
            "summary": {},
            "failures": [{"id": r.item.id, "path": str(r.item.path), "error": r.error} for r in self.failures],
            "items": [],
        }
        for name in self.names:
            summary = self.summary(name).to_dict()
            summary["failed"] = len(self.items) - summary["n"]
            out["summary"][name] = _finite(summary)
        for r in self.items:
            entry: dict[str, Any] = {"id": r.item.id, "path": str(r.item.path), "group": r.item.group,
                                     "reference": str(r.item.key)}
            if r.item.offset or r.item.duration is not None:
                entry["offset"], entry["duration"] = r.item.offset, r.item.duration
            if r.error is not None:
                entry["error"] = r.error
            entry["predictions"] = {
                name: {"key": str(p.key), "confidence": round(float(p.confidence), 6),
                       "scores": {k: getattr(p.score, k) for k in SCORE_NAMES + ("category",)},
                       "probabilities": {lab: round(float(v), 6) for lab, v in zip(KEY_LABELS, p.probabilities)}}
                for name, p in r.predictions.items()}
            out["items"].append(entry)
        return out

    def markdown(self, compare: bool = False) -> str:
        """Markdown tables: scores, breakdown, per group; ``compare`` adds differences."""
        return format_markdown(self, compare)


def _finite(value):
    """Replace NaN by None recursively (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- running -----------------------------------------------------------------------------

def _prepare_item(path: str, configs: tuple, spans: Mapping[str, tuple[float, float | None]],
                  device: str = "cpu", tuning: str | float = "compensate") -> list:
    """Features of one file for each distinct ``(front-end config, feature options)``
    (runs in workers)."""
    from musicssl.key.estimator import compute_features

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

    from musicssl.frontend.cqt import crop_bins, log_compress

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
    from musicssl.batch import run_batch

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


# --- Markdown ------------------------------------------------------------------------------

_SHORT = {"mirex": "MIREX (mir_eval: fifth above)", "mirex_both": "MIREX (both fifths, MIREX ≥ 2017)",
          "ksea": "KSEA", "mode": "mode acc.", "accuracy": "exact acc."}


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _delta(value: float, base: float) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (value, base)):
        return "–"
    return f"{100 * (value - base):+.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def format_markdown(evaluation: Evaluation, compare: bool = False) -> str:
    """The report as Markdown (scores in %)."""
    ds = evaluation.dataset
    names = evaluation.names
    summaries = {name: evaluation.summary(name) for name in names}
    total = len(evaluation.items)
    lines = [f"## Key evaluation: {ds.name}", "",
             f"Source: `{ds.root}`. {total} items with audio; {len(ds.missing)} annotated items with "
             f"missing audio and {len(ds.skipped)} skipped annotations (unknown key) are not scored; "
             f"{len(evaluation.failures)} items failed to analyse.", "",
             "Scores in %. *MIREX (mir_eval)*: `mir_eval.key.weighted_score` (0.5 only for a fifth "
             "above); *MIREX (both fifths)*: also 0.5 for a fifth below, as MIREX since 2017.", ""]
    rows = []
    for name in names:
        s = summaries[name]
        rows.append([name, f"{s.n}/{total}"] + [_pct(getattr(s, m)) for m in SCORE_NAMES])
    lines += _table(["estimator", "scored"] + [_SHORT[m] for m in SCORE_NAMES], rows)
    if compare and len(names) > 1:
        base = names[0]
        lines += ["", f"### Differences against `{base}` (percentage points)", ""]
        rows = [[name] + [_delta(getattr(summaries[name], m), getattr(summaries[base], m)) for m in SCORE_NAMES]
                for name in names[1:]]
        lines += _table(["estimator"] + [_SHORT[m] for m in SCORE_NAMES], rows)
    lines += ["", "### Breakdown: count (%)", ""]
    rows = []
    for name in names:
        s = summaries[name]
        cells = [name]
        for c in ("correct", "fifth", "relative", "parallel", "other"):
            text = f"{s.counts[c]} ({_pct(s.percent[c] / 100 if s.n else float('nan'))})"
            if c == "fifth":
                text += f" [↑{s.counts['fifth_above']} ↓{s.counts['fifth_below']}]"
            cells.append(text)
        rows.append(cells)
    lines += _table(["estimator", "correct", "fifth [above/below]", "relative", "parallel", "other"], rows)
    groups = sorted({g for s in summaries.values() for g in s.groups})
    if groups:
        label = ds.group_name or "group"
        for metric in ("mirex", "mirex_both"):
            lines += ["", f"### Per {label}: {_SHORT[metric]} (%)", ""]
            header = [label, "n"] + names
            if compare and len(names) > 1:
                header += [f"Δ {n}" for n in names[1:]]
            rows = []
            for g in groups:
                cells = [g, str(max(summaries[n].groups[g].n if g in summaries[n].groups else 0 for n in names))]
                values = {n: getattr(summaries[n].groups[g], metric) if g in summaries[n].groups else float("nan")
                          for n in names}
                cells += [_pct(values[n]) for n in names]
                if compare and len(names) > 1:
                    cells += [_delta(values[n], values[names[0]]) for n in names[1:]]
                rows.append(cells)
            lines += _table(header, rows)
    return "\n".join(lines) + "\n"


# --- files ------------------------------------------------------------------------------------

def write_results(evaluation: Evaluation, out_dir: str | Path, compare: bool = False) -> list[Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; returns the paths."""
    from musicssl.outputs import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    atomic_write_text(json_path, json.dumps(evaluation.to_dict(), indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(md_path, evaluation.markdown(compare))
    return [json_path, md_path]


def write_figures(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """Confusion matrices (every estimator), embedding PCA (models with embeddings)
    and key-grams (items with local keys), as PNG and SVG in ``out_dir``."""
    from musicssl.evaluation import figures

    out_dir = Path(out_dir)
    paths: list[Path] = []
    for name in evaluation.names:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        if evaluation.scored(name):
            paths += figures.plot_confusion(evaluation.confusion(name), out_dir / f"confusion_{safe}",
                                            f"{name} on {evaluation.dataset.name}: key confusion")
        with_embedding = [r for r in evaluation.items if name in r.embeddings]
        if len(with_embedding) >= 3:
            emb = np.stack([r.embeddings[name].reshape(-1, 12).mean(axis=0) for r in with_embedding])
            paths += figures.plot_embedding_pca(
                emb, [r.item.key for r in with_embedding], out_dir / f"pca_{safe}",
                f"{name} on {evaluation.dataset.name}: channel-averaged embeddings (PCA)")
        for r in evaluation.items:
            if name in r.local:
                times, probs = r.local[name]
                item_safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in r.item.id)
                paths += figures.plot_keygram(probs, times, out_dir / f"keygram_{safe}_{item_safe}",
                                              f"{name}: local keys of {r.item.id}", reference=r.item.key)
    return paths
