"""Handcrafted features + one-vs-one SVM (Wu et al. 2015): ``svm-linear`` and ``svm-rbf``.

The 59 features of :mod:`waferscope.features.handcrafted` are standardised, then a scikit-learn
``SVC`` (libsvm's one-vs-one multi-class scheme, ``class_weight="balanced"`` against the class
imbalance, Platt-scaled probabilities) is fitted.

Persistence without pickle: the scaler's mean/scale and the SVC's fitted arrays (support vectors,
dual coefficients, intercepts, per-class support counts, Platt parameters) are stored as tensors,
and :meth:`_load_state` puts them back on a fresh ``SVC``, so loading never re-fits and runs no code.
"""

from __future__ import annotations

import numpy as np

from waferscope.base import Classifier, Interval, Options
from waferscope.errors import RunDirError
from waferscope.features.handcrafted import N_FEATURES, extract_features
from waferscope.models.classifiers.common import label_order, labelled_for_training, require_wafer_maps
from waferscope.registry import register

# The SVC's fitted arrays, stored as they are ("_"-prefixed ones are libsvm's internal copies).
_SVC_ARRAYS = ("support_", "support_vectors_", "_n_support", "_dual_coef_", "_intercept_", "_probA", "_probB",
               "class_weight_", "dual_coef_", "intercept_")


class _SVMClassifier(Classifier):
    kernel = "rbf"
    _docstrings = {  # shared by svm-linear and svm-rbf
        "n_jobs": "Processes for feature extraction.",
        "scaler_": "Feature standardiser fitted on the training maps.",
        "svc_": "The fitted scikit-learn ``SVC``.",
    }
    # libsvm fits its Platt scaling pairwise and without the class weights; on the WM-811K mix the
    # prior correction lowered svm-rbf's macro-F1 0.647 → 0.601 (docs/classification.md).
    prior_refusal = ("the SVMs' Platt-scaled probabilities are not class-balanced posteriors "
                     "(docs/classification.md, 'The class mix of your wafers')")

    _parameter_constraints = {
        "C": [Interval(float, 0, None, closed="neither")],
        "gamma": [Options("scale", "auto"), Interval(float, 0, None, closed="neither")]}

    def __init__(self, C: float = 10.0, gamma: str | float = "scale", seed: int = 0, n_jobs: int = -1,
                 progress: bool = True):
        self.C = C
        self.gamma = gamma
        self.seed = seed
        self.n_jobs = n_jobs
        self.progress = progress

    def _svc(self):
        import warnings

        from sklearn.svm import SVC

        # scikit-learn 1.9 deprecates probability=True (removal planned for 1.11) in favour of
        # CalibratedClassifierCV, whose fitted state cannot be stored as plain arrays as simply.
        warnings.filterwarnings("ignore", message=".*probability.*parameter was deprecated", category=FutureWarning)
        return SVC(kernel=self.kernel, C=self.C, gamma=self.gamma, class_weight="balanced",
                   decision_function_shape="ovo", probability=True, random_state=self.seed)

    def features(self, dataset) -> np.ndarray:
        require_wafer_maps(dataset, self.registry_name or type(self).__name__, states=False)  # states: below
        return extract_features(dataset.maps, n_jobs=self.n_jobs, progress=self.progress, where=dataset.name)

    def fit(self, dataset, **kwargs) -> "_SVMClassifier":
        from sklearn.preprocessing import StandardScaler

        dataset = labelled_for_training(dataset, type(self).__name__)
        classes = label_order(dataset.labels)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in dataset.labels.astype(str)], dtype=np.int64)
        x = self.features(dataset)
        scaler = StandardScaler().fit(x)
        svc = self._svc().fit(scaler.transform(x), y)
        self.classes_ = list(classes)
        self.scaler_, self.svc_ = scaler, svc
        return self

    def predict_proba(self, dataset) -> np.ndarray:
        self._check_fitted()
        if len(dataset) == 0:
            return np.zeros((0, len(self.classes_)))
        proba = self.svc_.predict_proba(self.scaler_.transform(self.features(dataset)))
        # svc.classes_ are the integer indices of the classes seen; map them onto classes_.
        out = np.zeros((len(proba), len(self.classes_)))
        out[:, self.svc_.classes_] = proba
        return out

    def n_parameters(self) -> int:
        self._check_fitted()
        return int(self.svc_.support_vectors_.size + self.svc_.dual_coef_.size + self.svc_.intercept_.size)

    # ---- persistence ----------------------------------------------------------------------------
    def _state(self):
        tensors = {"scaler.mean": self.scaler_.mean_, "scaler.scale": self.scaler_.scale_,
                   "svc.classes": np.asarray(self.svc_.classes_, dtype=np.int64)}
        for name in _SVC_ARRAYS:
            tensors[f"svc.{name.lstrip('_')}"] = np.ascontiguousarray(getattr(self.svc_, name))
        extras = {"classes": list(self.classes_), "svc_gamma": float(self.svc_._gamma),
                  "n_features": N_FEATURES}
        return tensors, extras

    def _load_state(self, tensors, extras) -> None:
        from sklearn.preprocessing import StandardScaler

        try:
            arr = {k: tensors[k].numpy() for k in tensors}
            scaler = StandardScaler()
            scaler.mean_, scaler.scale_ = arr["scaler.mean"], arr["scaler.scale"]
            scaler.var_ = scaler.scale_ ** 2
            scaler.n_features_in_ = len(scaler.mean_)
            scaler.n_samples_seen_ = 0
            svc = self._svc()
            for name in _SVC_ARRAYS:
                setattr(svc, name, arr[f"svc.{name.lstrip('_')}"])
            svc.classes_ = arr["svc.classes"]
            svc._gamma = float(extras["svc_gamma"])
            svc._sparse = False
            svc.fit_status_ = 0
            svc.shape_fit_ = (0, svc.support_vectors_.shape[1])
            svc.n_features_in_ = svc.support_vectors_.shape[1]
        except KeyError as exc:
            raise RunDirError(f"the saved SVM state lacks {exc}") from None
        self.classes_ = list(extras["classes"])
        self.scaler_, self.svc_ = scaler, svc


@register("svm-linear", kind="classifier")
class LinearSVMClassifier(_SVMClassifier):
    """Linear-kernel one-vs-one SVM on the 59 handcrafted features.

    Parameters
    ----------
    C
        SVM regularisation (larger: less).
    gamma
        Kernel coefficient (scikit-learn's; unused by the linear kernel).
    seed
    n_jobs
    progress

    Attributes
    ----------
    classes_
    scaler_
    svc_
    """

    kernel = "linear"

    def __init__(self, C: float = 1.0, gamma: str | float = "scale", seed: int = 0, n_jobs: int = -1,
                 progress: bool = True):
        super().__init__(C=C, gamma=gamma, seed=seed, n_jobs=n_jobs, progress=progress)


@register("svm-rbf", kind="classifier")
class RBFSVMClassifier(_SVMClassifier):
    """RBF-kernel one-vs-one SVM on the 59 handcrafted features.

    Parameters
    ----------
    C
        SVM regularisation (larger: less).
    gamma
        RBF kernel coefficient (``"scale"``, ``"auto"`` or a number).
    seed
    n_jobs
    progress

    Attributes
    ----------
    classes_
    scaler_
    svc_
    """

    kernel = "rbf"
