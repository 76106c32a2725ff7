"""Seeded training before and after the shared training engine (issue 30 item 4): same numbers?

Trains every torch model family on tiny synthetic data with a fixed seed and writes, per case, the
per-epoch losses (and validation scores), the SHA-256 of the fitted weights and the model's outputs
on a held-out set. Run it once against the tree before the change and once against the tree after,
then compare the two JSON files:

    git archive <base-commit> src | tar -x -C /tmp/base
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/base/src python scripts/experiments/training_engine_parity.py before.json
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/training_engine_parity.py after.json
    python scripts/experiments/training_engine_parity.py --compare before.json after.json

``--compare`` prints, per case, whether the weights are bit-identical and the largest absolute
difference of losses and outputs.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np


def _sha(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k]
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)).tobytes())
    return h.hexdigest()


def _floats(x) -> list:
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def cases():
    from waferscope.data.synthetic import generate

    train = generate(300, seed=0, size=(24, 24))  # 10 % validation = 30 maps >= 2 per class: early stopping on
    mixed = generate(241, seed=3, size=(24, 24), mixed=True)  # 217 training maps: 217 % 16 == 9
    mixed_odd = generate(218, seed=3, size=(24, 24), mixed=True)  # 196 training maps: 196 % 13 == 1
    normals = generate(40, seed=1, size=(24, 24), classes=["none"])
    test = generate(18, seed=2, size=(24, 24))
    net = dict(input_size=16, batch_size=16, progress=False)
    yield "cnn (early stopping, patience 1)", "classifier", "cnn", dict(net, width=4, epochs=6, patience=1), train
    yield "cnn sampler", "classifier", "cnn", dict(net, width=4, epochs=2, imbalance="sampler"), train
    yield "cnn_fine localise (masks)", "classifier", "cnn_fine", dict(net, width=4, head=4, epochs=2), train
    yield "cnn_fine area+canonical", "classifier", "cnn_fine", dict(net, width=4, head=4, epochs=2, resample="area",
                                                                    orient="canonical"), train
    yield "multilabel_cnn", "classifier", "multilabel_cnn", dict(net, width=4, epochs=3), mixed
    yield "multilabel_cnn (a 1-map leftover batch)", "classifier", "multilabel_cnn", dict(
        net, batch_size=13, width=4, epochs=2), mixed_odd
    yield "ae_latent", "classifier", "ae_latent", dict(net, epochs=2, ae_epochs=2, latent_dim=8, ae_width=4,
                                                       hidden=8), train
    yield "cnn_residual augment", "classifier", "cnn_residual", dict(net, epochs=2, ae_epochs=2, latent_dim=8,
                                                                     ae_width=4, width=4, residual_mode="augment"), train
    yield "kd_student", "classifier", "kd_student", dict(net, epochs=2, width=4, head=8,
                                                         teacher_params={"epochs": 1, "width": 4}), train
    yield "pseudo_label_cnn", "classifier", "pseudo_label_cnn", dict(net, width=4, epochs=2, rounds=1), train
    yield "autoencoder", "detector", "autoencoder", dict(input_size=16, base_channels=4, latent_dim=4, epochs=3,
                                                         batch_size=8, progress=False), normals
    yield "stfpm", "detector", "stfpm", dict(pretrained=None, input_size=16, epochs=2, train_batch_size=8,
                                             progress=False), normals
    yield "reverse_distillation", "detector", "reverse_distillation", dict(
        pretrained=None, input_size=32, epochs=2, train_batch_size=8, n_blocks=1, progress=False), normals
    yield "efficientad (20 epochs: lr/10 phase)", "detector", "efficientad", dict(
        pretrained=None, input_size=16, epochs=20, train_batch_size=16, progress=False), normals
    yield "reconpatch", "detector", "reconpatch", dict(
        backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.25, "small_input": True}, input_size=16,
        embedding_dim=16, coreset_ratio=0.5, predict_batch_size=16, progress=False, representation_dim=16, projection_dim=8,
        epochs=2, steps_per_epoch=3, contrastive_batch_size=32), normals
    yield test


def run(out_path: str) -> None:
    import torch

    from waferscope import registry
    from waferscope.data.synthetic import generate
    from waferscope.evaluate import synthetic as es

    torch.set_num_threads(1)
    gen = list(cases())
    test = gen.pop()
    results = {}
    for label, kind, name, params, data in gen:
        est = registry.create(name, kind, **params).fit(data)
        tensors, extras = est._state()
        out = est.predict_proba(test) if kind == "classifier" else est.score(test).scores
        history = (getattr(est, "history_", None) or getattr(est, "loss_history_", None)
                   or getattr(est, "train_loss_", None))
        results[label] = {"weights_sha256": _sha(tensors), "history": history,
                          "ae_history": getattr(est, "ae_history_", None), "outputs": _floats(out)}
        print(label, results[label]["weights_sha256"][:12], file=sys.stderr)
    real = generate(36, seed=99)
    for ema in (0.0, 0.9):
        res = es.realism_check(n=90, epochs=2, width=4, batch=30, size=32, grid=4, ema=ema, die_noise=0.05,
                               real=real, progress=False, tta=False)
        results[f"realism_check ema={ema}"] = {"outputs": [res["macro_f1"]], "predicted": res["predicted"]}
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


def _max_diff(a, b) -> float:
    if a is None or b is None:
        return 0.0 if a == b else float("nan")
    flat = []
    for x, y in zip(a, b):
        if isinstance(x, dict):
            flat += [abs(float(x[k]) - float(y.get(k, np.nan))) for k in x if k != "epoch"]
        else:
            flat.append(abs(float(x) - float(y)))
    return max(flat, default=0.0) if len(a) == len(b) else float("inf")


def compare(before_path: str, after_path: str) -> None:
    before, after = (json.load(open(p)) for p in (before_path, after_path))
    print("| case | weights identical | max |Δ| losses | max |Δ| outputs |")
    print("|---|---|---:|---:|")
    for label, b in before.items():
        a = after.get(label)
        if a is None:
            print(f"| {label} | missing after | | |")
            continue
        same = ("n/a" if "weights_sha256" not in b else
                "yes" if a["weights_sha256"] == b["weights_sha256"] else "NO")
        if "predicted" in b:
            same = "predictions " + ("identical" if a["predicted"] == b["predicted"] else "DIFFER")
        loss = max(_max_diff(b.get("history"), a.get("history")), _max_diff(b.get("ae_history"), a.get("ae_history")))
        outs = max(abs(x - y) for x, y in zip(b["outputs"], a["outputs"]))
        print(f"| {label} | {same} | {loss:.3g} | {outs:.3g} |")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        run(sys.argv[1])
