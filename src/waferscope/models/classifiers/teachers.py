"""Teachers for distillation: resolve a teacher spec to a fitted classifier and read its soft targets.

Any classifier can teach (only ``predict_proba`` is used), so this module depends on no network code.
"""

from __future__ import annotations

import numpy as np

from waferscope.errors import DataError


def fitted_teacher(spec: str, labelled, seed: int = 0, progress: bool = False):
    """Return a fitted classifier to distil from, named by ``spec``.

    A run directory, ``bundled:cnn_gradcam`` / ``bundled:gbm``, or a registered classifier name
    (then trained on ``labelled`` first, with its defaults and ``seed``). Any classifier can
    teach: only its ``predict_proba`` is used.
    """
    from waferscope import registry
    from waferscope.base import load_run

    spec = str(spec)
    if spec.startswith("bundled:"):
        from waferscope.models.classifiers import load_default

        return load_default(spec.partition(":")[2])
    if spec in registry.available("classifier"):
        cls = registry.get(spec, "classifier")
        params = {k: v for k, v in {"seed": seed, "progress": progress}.items() if k in cls._param_names()}
        return cls(**params).fit(labelled)
    return load_run(spec, kind="classifier")


def teacher_log_proba(teacher, dataset, classes: list[str]) -> np.ndarray:
    """(N, len(classes)) float32 log-probabilities of ``teacher`` for ``dataset``.

    Columns in the student's ``classes`` order (classes the student does not learn are
    dropped and the rest renormalised); a student class the teacher does not know is a clear
    error.
    """
    missing = sorted(set(classes) - set(teacher.classes_))
    if missing:
        raise DataError(f"the teacher ({type(teacher).__name__}) does not know class(es) {', '.join(missing)} "
                        f"of the training labels; it knows {', '.join(teacher.classes_)}")
    proba = np.asarray(teacher.predict_proba(dataset), dtype=np.float64)
    proba = proba[:, [list(teacher.classes_).index(c) for c in classes]]
    proba /= np.clip(proba.sum(1, keepdims=True), 1e-12, None)
    return np.log(np.clip(proba, 1e-6, None)).astype(np.float32)


def label_log_proba(labels, classes: list[str], smoothing: float = 0.05) -> np.ndarray:
    """(N, len(classes)) float32 log-probabilities of label-smoothed one-hot targets.

    Soft targets for maps a teacher does not see (``1 - smoothing`` on the label, the rest spread
    evenly); an unknown label is a clear error.
    """
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(map(str, labels)) - set(index))
    if missing:
        raise DataError(f"label(s) {', '.join(missing)} are not among the classes {', '.join(classes)}")
    k = len(classes)
    out = np.full((len(labels), k), smoothing / max(k - 1, 1), dtype=np.float64)
    out[np.arange(len(labels)), [index[str(c)] for c in labels]] = 1.0 - smoothing
    return np.log(out).astype(np.float32)
