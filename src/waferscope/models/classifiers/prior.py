"""Class-prior adaptation: the class mix a classifier assumes versus the mix of the wafers it classifies.

Every single-label waferscope classifier is trained class-balanced (class-weighted loss or
``class_weight="balanced"``), so its probabilities answer "which class, if every class were equally
common?". A fab's wafers are not like that: about 85 % of the labelled WM-811K maps are ``none``.
Then the few normal maps a balanced model calls Loc or Scratch outnumber the real Loc and Scratch
maps, and those classes' precision collapses. Bayes' rule moves the probabilities to another class
mix without retraining (Saerens, Latinne & Decaestecker, "Adjusting the outputs of a classifier to new
a priori probabilities: a simple procedure", Neural Computation 14(1), 2002)::

    p_target(c | x)  ∝  p_model(c | x) · π_target(c) / π_model(c)

``π_target`` can be given (:data:`WM811K_LABELLED_COUNTS`, or the user's own mix) or estimated from the
maps being classified, without labels, by the EM procedure of the same paper
(:func:`estimate_prior`): alternate "adjust the probabilities to the current prior" and "the prior
is the mean adjusted probability" until it settles. It needs a batch (a few hundred maps or more) whose
mix is the one to adapt to.

What ``estimate`` moves (since 2026-12-06): only the share of ``none``. EM estimates the whole mix,
but moving every defect class to its estimated share lowered macro-F1 on lot-disjoint real folds
(pooled 0.920 → 0.915 in the sets' own mix, by up to 0.01 in single folds), and so did moving them to
the *true* mix: the Bayes shift maximises accuracy, and macro-F1 weighs a rare class as much as a
common one. Moving ``none`` alone keeps what the prior is for (a stream of mostly clean wafers:
macro-F1 0.79 → 0.87 in the WM-811K mix, per lot fold) and lowered it by at most 0.0006 in any fold
and mix measured (one fold of the defects-only mix, with the calibrated probabilities;
:func:`estimated_target`; ``waferscope evaluate prior-shift --per-fold``, docs/classification_real.md).
A model without a ``none`` class gets the full EM mix.

Calibration: a model may store a temperature fitted on lot-grouped out-of-fold predictions
(:func:`fit_temperature`; the bundled ``gbm``'s is 1.5: its raw probabilities are over-confident);
its ``predict_proba`` then returns the calibrated probabilities, which the prior shift starts from.

A prior spec (CLI ``--prior``; :func:`resolve_prior` checks it against a model once, before any map
is scored, and :meth:`PriorShift.apply` moves that model's probabilities) is one of

* ``balanced`` — no change (the default);
* ``wm811k`` — the class mix of the 172,950 labelled WM-811K maps;
* ``estimate`` — EM on the maps being classified (the share of ``none`` only, see above);
* ``Center=3,none=85,…`` — weights per class (normalised; every class of the model must be named);
* a ``.json`` file holding such a ``{class: weight}`` object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from waferscope.errors import ConfigError

# Labelled maps per class in the full LSWMD.pkl (Wu et al. 2015): what a fab's own stream looks like
# far more than the balanced dev set does.
WM811K_LABELLED_COUNTS = {"none": 147_431, "Edge-Ring": 9_680, "Edge-Loc": 5_189, "Center": 4_294, "Loc": 3_593,
                          "Scratch": 1_193, "Random": 866, "Donut": 555, "Near-full": 149}
PRIOR_SPECS = ("balanced", "wm811k", "estimate")
# Below this many maps the EM estimate of a nine-class mix rests on a handful of maps per class.
MIN_MAPS_TO_ESTIMATE = 200


def model_prior(classifier) -> np.ndarray:
    """Return the class mix ``classifier``'s probabilities assume: uniform for a class-balanced model.

    Raises ConfigError when the model says its probabilities are not class-balanced posteriors
    (``Classifier.prior_refusal``: the SVMs, multi-label heads, a network trained with
    ``imbalance="none"``).
    """
    refusal = getattr(classifier, "prior_refusal", None)
    if refusal:
        name = getattr(classifier, "registry_name", None) or type(classifier).__name__
        raise ConfigError(f"{name} cannot take a class prior: {refusal}")
    n = len(classifier.classes_)
    return np.full(n, 1.0 / n)


def parse_prior(spec: str, classes) -> np.ndarray | str | None:
    """Return a prior spec → a probability vector over ``classes``, ``"estimate"``, or None (``balanced``)."""
    classes = list(classes)
    text = str(spec).strip()
    if text in ("", "balanced"):
        return None
    if text == "estimate":
        return "estimate"
    if text == "wm811k":
        weights = {c: WM811K_LABELLED_COUNTS.get(c) for c in classes}
        missing = [c for c, w in weights.items() if w is None]
        if missing:
            raise ConfigError(f"prior 'wm811k': the WM-811K mix has no class {', '.join(missing)} "
                              f"(it knows {', '.join(WM811K_LABELLED_COUNTS)})")
    elif text.endswith(".json"):
        path = Path(text)
        try:
            weights = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: prior file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON object of class weights ({exc})") from None
        if not isinstance(weights, dict):
            raise ConfigError(f"{path}: expected a JSON object {{class: weight}}, got {type(weights).__name__}")
    elif "=" in text:
        weights = {}
        for part in text.split(","):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"prior {spec!r}: expected Class=weight pairs separated by commas")
            weights[name.strip()] = value.strip()
    else:
        raise ConfigError(f"prior {spec!r}: expected one of {', '.join(PRIOR_SPECS)}, Class=weight pairs, "
                          f"or a .json file")
    unknown = sorted(set(weights) - set(classes))
    missing = [c for c in classes if c not in weights]
    if unknown or missing:
        raise ConfigError(f"prior {spec!r}: "
                          + (f"unknown class(es) {', '.join(unknown)}; " if unknown else "")
                          + (f"no weight for {', '.join(missing)}; " if missing else "")
                          + f"the model's classes are {', '.join(classes)}")
    try:
        vector = np.array([float(weights[c]) for c in classes])
    except (TypeError, ValueError):
        raise ConfigError(f"prior {spec!r}: every weight must be a number") from None
    if not np.all(np.isfinite(vector)) or (vector < 0).any() or vector.sum() <= 0:
        raise ConfigError(f"prior {spec!r}: weights must be finite, non-negative and not all zero")
    return vector / vector.sum()


def adjust_to_prior(proba: np.ndarray, base: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Probabilities under class mix ``base`` → the same evidence under ``target`` (rows sum to 1)."""
    scaled = np.asarray(proba, np.float64) * (np.asarray(target, np.float64) / np.asarray(base, np.float64))
    total = scaled.sum(1, keepdims=True)
    # a row whose every class got prior 0 keeps its original probabilities rather than dividing by 0
    return np.where(total > 0, scaled / np.where(total > 0, total, 1.0), proba)


def estimate_prior(proba: np.ndarray, base: np.ndarray, max_iter: int = 1000,
                   tol: float = 1e-7) -> tuple[np.ndarray, int]:
    """EM estimate of the class mix of the maps behind ``proba`` (no labels): (prior, iterations)."""
    proba = np.asarray(proba, np.float64)
    if len(proba) == 0:
        raise ConfigError("prior 'estimate' needs at least one map")
    prior = np.asarray(base, np.float64).copy()
    for step in range(1, max_iter + 1):
        updated = adjust_to_prior(proba, base, prior).mean(0)
        if np.abs(updated - prior).max() < tol:
            return updated, step
        prior = updated
    return prior, max_iter


def estimated_target(proba: np.ndarray, base: np.ndarray, none_index: int | None) -> np.ndarray:
    """Return the mix ``--prior estimate`` moves to.

    EM's share of ``none`` (class ``none_index``), the other classes sharing the rest in the
    proportions of ``base`` (the full EM mix when there is no none class). See the module
    docstring for why.
    """
    estimated, _ = estimate_prior(proba, base)
    if none_index is None:
        return estimated
    base = np.asarray(base, np.float64)
    others = np.arange(len(base)) != none_index
    target = np.empty_like(estimated)
    target[others] = (1.0 - estimated[none_index]) * base[others] / base[others].sum()
    target[none_index] = estimated[none_index]
    return target


def fit_temperature(proba: np.ndarray, labels: np.ndarray) -> float:
    """Return the temperature T that makes ``softmax(log(proba) / T)`` fit integer ``labels`` best.

    Least log-loss; Guo et al. 2017, "On calibration of modern neural networks". Fit it on held-out
    predictions (e.g. the lot-grouped folds' out-of-fold ones), never on the training maps.
    """
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(proba, np.float64), 1e-300, 1.0))
    labels = np.asarray(labels, dtype=np.int64)
    if len(logp) == 0:
        raise ConfigError("a temperature needs at least one labelled prediction")

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), labels]))

    return float(np.exp(minimize_scalar(loss, bounds=(-4.0, 4.0), method="bounded").x))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(proba) / temperature)``: the same arg-max, the confidence rescaled."""
    from scipy.special import softmax

    if temperature == 1.0:
        return proba
    return softmax(np.log(np.clip(np.asarray(proba, np.float64), 1e-300, 1.0)) / temperature, axis=1)


@dataclass(frozen=True)
class PriorShift:
    """A ``--prior`` resolved for one model.

    The mix its probabilities assume (``base``) and the mix to move them to (``target``: a
    vector over the model's classes, or ``"estimate"``).
    """

    base: np.ndarray
    target: np.ndarray | str
    none_index: int | None = None  # the model's none class: all that ``estimate`` moves

    @property
    def estimates(self) -> bool:
        """Return whether the target mix is estimated from the probabilities."""
        return isinstance(self.target, str)

    def fixed(self, proba: np.ndarray) -> "PriorShift":
        """Return this shift with its target fixed.

        For ``"estimate"``, the mix estimated from ``proba`` (so it can be applied to
        parts of that batch, e.g. one partition at a time).
        """
        if not self.estimates:
            return self
        return PriorShift(self.base, estimated_target(proba, self.base, self.none_index), self.none_index)

    def apply(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (the probabilities under the target mix, the target mix used).

        The target mix is estimated from ``proba`` itself for ``"estimate"``.
        """
        target = self.fixed(proba).target
        return adjust_to_prior(proba, self.base, target), target


def resolve_prior(classifier, spec: str | None) -> PriorShift | None:
    """``spec`` checked against ``classifier``: None when it changes nothing (``balanced``), else the shift to apply.

    A malformed spec, or a model that cannot take a prior, raises ConfigError here, so callers
    resolve before reading and scoring maps.
    """
    target = None if spec is None else parse_prior(spec, classifier.classes_)
    classes = list(classifier.classes_)
    return None if target is None else PriorShift(model_prior(classifier), target,
                                                  classes.index("none") if "none" in classes else None)


def apply_prior(classifier, proba: np.ndarray, spec: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``classifier``'s probabilities moved to the class mix ``spec``.

    Returns (probabilities, the prior used, or None when nothing changed).
    """
    shift = resolve_prior(classifier, spec)
    return (proba, None) if shift is None else shift.apply(proba)
