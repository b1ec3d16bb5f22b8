"""Model names → estimators: ``"default"``, the shipped models, the template baselines,
``NAME+PROFILE`` specs and checkpoint paths (:func:`load_estimator`)."""

from __future__ import annotations

import warnings
from pathlib import Path

from musicssl.errors import CheckpointError, ConfigError
from musicssl.key.checkpoint import (
    DEFAULT_MODEL,
    default_model_path,
    shipped_key_models,
)
from musicssl.key.estimator import KeyEstimator, TemplateKeyEstimator
from musicssl.key.templates import PROFILES

#: Template prior that ``"default"`` multiplies the shipped model's probabilities by
#: (see :func:`combine_with_prior`; README, "Key: accuracy", for the figures with and without it).
DEFAULT_PRIOR = "kostka-payne"


#: How each shipped model × prior pair is combined: ``(prior weight, temperature)``, i.e.
#: ``p ∝ (p_net · p_prior^weight)^(1/temperature)`` (:func:`combine_with_prior`,
#: :func:`apply_temperature`). ``skey-band+kostka-payne``: both fitted together by minimum NLL
#: of the reference keys on dev-synth (``benchmarks/key_combination.py --fit-on dev-synth``):
#: weight 0.54, T 1.20; NLL 0.48 / 0.69 / 1.72 and ECE 2.5 / 11.8 / 14.9 % on dev-synth /
#: render24 / tim48, against 0.51 / 0.72 / 1.85 and 6.7 / 14.9 / 16.8 % for the earlier weight 1
#: (chosen by MIREX) with T 1.83 (fitted after it). ``skey-debian+kostka-payne`` keeps weight 1, T 1.83.
FITTED_COMBINATIONS: dict[tuple[str, str | None], tuple[float, float]] = {
    ("skey-band", "kostka-payne"): (0.54, 1.20),
    ("skey-debian", "kostka-payne"): (1.0, 1.83),
}


#: ``prior`` value that turns a spec's prior off (``"default"`` then means the network alone).
NO_PRIOR = "none"


def model_names() -> tuple[str, ...]:
    """Every name :func:`load_estimator` accepts besides a checkpoint path
    (``CHECKPOINT+PROFILE`` works for paths too)."""

    shipped = tuple(shipped_key_models())
    return ("default", *shipped, *PROFILES, *(f"{m}+{p}" for m in shipped for p in PROFILES))


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"MODEL+PROFILE"`` → ``("MODEL", "PROFILE")``; a spec without a known
    profile after its last ``+`` (or an existing file) → ``(spec, None)``."""

    model, plus, profile = spec.rpartition("+")
    if plus and model and profile in PROFILES and not Path(spec).is_file():
        return model, profile
    return spec, None


def load_estimator(spec: str | Path | None = "default", device: str = "cpu",
                   transpositions: int | None = None, prior: str | None = None, backend: str | None = None):
    """An estimator from a spec: ``"default"``, a shipped model's name (see
    :func:`shipped_key_models`), a template (``"krumhansl"``, ``"temperley"``,
    ``"kostka-payne"``) or a checkpoint path; a network spec may end in
    ``+PROFILE`` (e.g. ``"skey-debian+temperley"``) for a template prior
    (:class:`KeyEstimator`). Every estimator has
    ``estimate``/``estimate_file``/``estimate_features``. ``transpositions``
    applies to network models; templates ignore it.

    ``"default"`` is the shipped ``skey-band`` model with the
    :data:`DEFAULT_PRIOR` template prior when the package has the model, else the
    Krumhansl template baseline (with a warning). ``prior`` overrides the spec's:
    a profile name, or ``"none"`` for the network alone. ``backend`` (``"torch"``,
    ``"onnx"``, None: as the file is) runs network models on torch or onnxruntime.
    """

    name, spec_prior = split_spec("default" if spec is None else str(spec))
    if prior is not None and prior != NO_PRIOR and prior not in PROFILES:
        raise ConfigError(f"prior must be one of {', '.join((NO_PRIOR, *PROFILES))}, got {prior!r}")
    if name in PROFILES:
        if spec_prior is not None or prior not in (None, NO_PRIOR):
            raise ConfigError(f"{spec}: a template prior applies to network models, not to a template")
        return TemplateKeyEstimator(name, device=device, chroma="chroma")
    if name == "default":
        if default_model_path() is None:
            warnings.warn("no trained key model is good enough to be the default yet (see README); "
                          "using the Krumhansl template baseline",
                          stacklevel=2)
            return TemplateKeyEstimator("krumhansl", chroma="chroma")
        name, spec_prior = DEFAULT_MODEL, spec_prior or DEFAULT_PRIOR
    chosen = spec_prior if prior is None else (None if prior == NO_PRIOR else prior)
    shipped = shipped_key_models()
    if name in shipped:
        estimator = KeyEstimator.from_checkpoint(shipped[name], device, transpositions, prior=chosen,
                                                 backend=backend)
        estimator.name = name if chosen is None else f"{name}+{chosen}"
        estimator.prior_weight, estimator.temperature = FITTED_COMBINATIONS.get((name, chosen), (1.0, 1.0))
        return estimator
    path = Path(name)
    if not path.is_file():
        raise CheckpointError(f"{spec}: no such checkpoint or model name (names: {', '.join(model_names())})")
    return KeyEstimator.from_checkpoint(path, device, transpositions, prior=chosen, backend=backend)
