"""``ensemble``: the average of several classifiers' probabilities, saved and served as one model.

On the lot-grouped real folds the most accurate classifier is not one model but the average of two
that err differently: ``gbm`` (trees on the 120 wafer features) and ``cnn_fine`` distilled from it
(a network on the canonical 48 × 48 area-resampled map); docs/classification_real.md. ``evaluate
classifiers a+b`` measures such an average from each member's cached fold probabilities; this class
is the same average as a model a user can train, save, load, serve and put in a batch job.

``members``: classifier specs as ``evaluate classifiers`` takes them (``name`` or
``name:param=value,...``); the default is the measured pair. ``fit`` fits every member on the same
data, in order; ``predict_proba`` is the plain mean of the members' ``predict_proba`` (each member
calibrated as it is: ``gbm`` applies its temperature). Every member must name the same classes.

The bundled ``ensemble`` is assembled from the bundled ``gbm`` and ``cnn_distilled`` without
training (:meth:`EnsembleClassifier.from_members`); its run stores only their names, so the package
holds each set of weights once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from waferscope.base import Classifier, estimator_from_saved
from waferscope.errors import ConfigError, RunDirError
from waferscope.registry import register

# The measured best pair (docs/classification_real.md, "the best model"): the bundled gbm and the
# recipe of the bundled cnn_distilled, distilled here from a gbm teacher fitted on the same data.
CNN_RECIPE = ("cnn_fine:teacher=gbm,distil_synthetic=6000,epochs=20,localise=0,resample=area,orient=canonical,"
              "synthetic_profile=fab,distil_classes=Center|Donut|Edge-Loc|Edge-Ring|Loc|Loc|Near-full|Random|"
              "Scratch|none|none")
BUNDLED_PREFIX = "bundled:"


@register("ensemble", kind="classifier")
class EnsembleClassifier(Classifier):
    """The mean of the member classifiers' probabilities (see the module docstring).

    Parameters
    ----------
    members : sequence of str
        Classifier specs, ``name`` or ``name:param=value,...`` (at least two; no ensemble inside).
    seed : int
        Passed to every member (each member seeds its own training).
    progress : bool
        Passed to the members that show progress.

    Attributes
    ----------
    members_ : list of Classifier
        The fitted members, in the order of ``members``.
    classes_ : list of str
        The class names every member predicts, in their shared order.
    sources_ : list of str or None
        Per member, ``"bundled:NAME"`` when it is a bundled model (saved by name, not by weights).
    """

    _tags = {"needs_labels": True}

    def __init__(self, members: Sequence[str] = ("gbm", CNN_RECIPE), seed: int = 0, progress: bool = True):
        self.members = members
        self.seed = seed
        self.progress = progress

    def validate_params(self) -> None:
        """Check the parameters, and that every member spec names a classifier that can be trained here."""
        super().validate_params()
        from waferscope import registry

        if len(self.members) < 2:
            raise ConfigError(f"ensemble: parameter members needs at least two classifiers, got {self.members!r}")
        for spec in self.members:
            if not isinstance(spec, str):
                raise ConfigError(f"ensemble: parameter members must hold classifier specs (text), got {spec!r}")
            if spec.startswith(BUNDLED_PREFIX):
                raise ConfigError("ensemble: bundled members are assembled with EnsembleClassifier.from_members, "
                                  f"not trained: {spec!r}")
            name, _ = registry.parse_spec(spec, "classifier")
            if name == self.registry_name:
                raise ConfigError("ensemble: parameter members cannot hold another ensemble")

    def _make_member(self, spec: str) -> Classifier:
        from waferscope import registry

        name, params = registry.parse_spec(spec, "classifier")
        cls = registry.get(name, "classifier")
        accepted = cls._param_names()
        params = {"seed": self.seed, **params}
        if "progress" in accepted:
            params.setdefault("progress", self.progress)
        return cls(**params)

    def fit(self, dataset, **kwargs) -> "EnsembleClassifier":
        """Fit every member on ``dataset`` (in the order of ``members``); ``kwargs`` go to each member's fit."""
        members = [self._make_member(spec).fit(dataset, **kwargs) for spec in self.members]
        self._set_members(members, [None] * len(members))
        return self

    @classmethod
    def from_members(cls, members: list[Classifier | str]) -> "EnsembleClassifier":
        """Assemble an ensemble of already fitted classifiers (or ``"bundled:NAME"`` names), without training."""
        from waferscope.models.classifiers import load_default

        fitted, sources = [], []
        for m in members:
            if isinstance(m, str):
                if not m.startswith(BUNDLED_PREFIX):
                    raise ConfigError(f"ensemble: a member given by name must be 'bundled:NAME', got {m!r}")
                fitted.append(load_default(m[len(BUNDLED_PREFIX):]))
                sources.append(m)
            else:
                m._check_fitted()
                fitted.append(m)
                sources.append(None)
        specs = [s or f"{m.registry_name}" for m, s in zip(fitted, sources)]
        est = cls(members=specs)
        est._set_members(fitted, sources)
        return est

    def set_params(self, **params) -> "EnsembleClassifier":
        """Set parameters; ``progress`` also reaches the fitted members (no bars from inside a quiet ensemble)."""
        super().set_params(**params)
        if "progress" in params:
            self._members_progress()
        return self

    def _members_progress(self) -> None:
        for m in getattr(self, "members_", []):
            if "progress" in m.get_params():
                m.set_params(progress=self.progress)

    def _set_members(self, members: list[Classifier], sources: list[str | None]) -> None:
        classes = [list(map(str, m.classes_)) for m in members]
        if any(c != classes[0] for c in classes):
            raise ConfigError(f"ensemble: the members predict different classes: {classes}")
        if len(members) < 2:
            raise ConfigError("ensemble: needs at least two members")
        self.members_ = members
        self.sources_ = list(sources)
        self.classes_ = classes[0]
        self._members_progress()

    @property
    def prior_refusal(self) -> str | None:  # type: ignore[override]
        """Why a class prior cannot move these probabilities: the first member's reason, or None."""
        # a class prior moves the average only if it may move every member's probabilities
        for m in getattr(self, "members_", []):
            if m.prior_refusal:
                return m.prior_refusal
        return None

    def predict_proba(self, dataset) -> np.ndarray:
        """Return the mean of the members' probabilities, one column per class of ``classes_``."""
        self._check_fitted()
        if len(dataset) == 0:
            return np.zeros((0, len(self.classes_)))
        return np.mean([np.asarray(m.predict_proba(dataset), dtype=np.float64) for m in self.members_], axis=0)

    def n_parameters(self) -> int:
        """Return the number of stored parameters of all members together."""
        self._check_fitted()
        return int(sum(m.n_parameters() for m in self.members_))

    # ---- persistence: each member's tensors under "m<i>/", its header in extras ----------------------
    def _state(self):
        tensors, docs = {}, []
        for i, (m, source) in enumerate(zip(self.members_, self.sources_)):
            if source is not None:
                docs.append({"bundled": source[len(BUNDLED_PREFIX):]})
                continue
            t, doc = m._saved()  # the same header a member's own run would have
            tensors.update({f"m{i}/{k}": v for k, v in t.items()})
            docs.append(doc)
        return tensors, {"classes": list(self.classes_), "members": docs}

    def _load_state(self, tensors, extras) -> None:
        from waferscope.models.classifiers import load_default

        docs = extras.get("members")
        if not isinstance(docs, list) or len(docs) < 2:
            raise RunDirError("the ensemble run lists no members")
        members, sources = [], []
        for i, doc in enumerate(docs):
            if "bundled" in doc:
                members.append(load_default(str(doc["bundled"])))
                sources.append(BUNDLED_PREFIX + str(doc["bundled"]))
                continue
            prefix = f"m{i}/"
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if doc.get("kind") != "classifier":
                raise RunDirError(f"ensemble member {i} is a {doc.get('kind')}, not a classifier")
            members.append(estimator_from_saved(doc, own, Path(".")))
            sources.append(None)
        self._set_members(members, sources)
        if list(self.classes_) != list(extras.get("classes", self.classes_)):
            raise RunDirError("the ensemble's saved classes differ from its members'")
