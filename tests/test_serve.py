"""`waferscope serve`: every endpoint and error through FastAPI's TestClient, one real uvicorn on
loopback, and the service's answers against the CLI's (`classify predict`, `detect score`)."""

from __future__ import annotations

import csv
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from clitools import call, invoke
from servetools import default_app, free_port, running_server

warnings.filterwarnings("ignore", message=".*httpx2.*")  # starlette's TestClient nags about httpx
from fastapi.testclient import TestClient  # noqa: E402

import waferscope.data as wd  # noqa: E402
from waferscope.data.io_parquet import write_parquet  # noqa: E402
from waferscope.serve import Limits  # noqa: E402


@pytest.fixture(scope="module")
def lot():
    return wd.load("synthetic:n=24,seed=11")


@pytest.fixture(scope="module")
def app():
    return default_app()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def _json(ds, ids=True):
    body = {"maps": [m.tolist() for m in ds.maps]}
    if ids:
        body["ids"] = list(ds.ids)
    return body


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---- results --------------------------------------------------------------------------------------
def test_health(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["waferscope_version"] and h["torch_version"]
    assert h["classifier"]["name"] and h["detector"]["name"] and len(h["classifier"]["classes"]) == 9
    assert h["classifier"]["source"].startswith("bundled") and h["classifier"]["trained_with_waferscope"]
    assert h["limits"] == Limits().as_dict() and h["rss_bytes"] > 0


def test_classify_equals_cli_predict(client, lot, tmp_path):
    data = tmp_path / "lot.parquet"
    write_parquet(lot, data)
    assert call("classify", "predict", "--data", data, "--out", tmp_path / "p.csv") == 0
    rows = _read_csv(tmp_path / "p.csv")
    got = client.post("/v1/classify", json=_json(lot)).json()
    assert [w["id"] for w in got["wafers"]] == [r["id"] for r in rows]
    assert [w["class"] for w in got["wafers"]] == [r["predicted"] for r in rows]
    for w, r in zip(got["wafers"], rows):
        for c, p in w["probabilities"].items():
            assert abs(p - float(r[f"p_{c}"])) <= 1e-6  # the CSV prints 6 decimals
    # the same file uploaded gives the same answers, with the file's ids and lots
    up = client.post("/v1/classify?maps=1", files={"file": ("lot.parquet", data.read_bytes())}).json()
    assert [w["class"] for w in up["wafers"]] == [w["class"] for w in got["wafers"]]
    assert [w["lot"] for w in up["wafers"]] == list(lot.meta["lot"])
    assert all(np.array_equal(np.array(w["map"]), m) for w, m in zip(up["wafers"], lot.maps))


def test_score_equals_cli_score(client, app, lot, tmp_path):
    data = tmp_path / "lot.parquet"
    write_parquet(lot, data)
    assert call("detect", "score", "--data", data, "--out", tmp_path / "s.csv") == 0
    rows = _read_csv(tmp_path / "s.csv")
    got = client.post("/v1/score", json=_json(lot)).json()
    thr = got["threshold"]
    assert thr is not None
    for w, r in zip(got["wafers"], rows):
        assert w["id"] == r["id"]
        # the CSV prints the score with 6 significant digits ("%.6g"): equal to that precision
        assert w["score"] == pytest.approx(float(r["score"]), rel=5e-6, abs=1e-6)
        assert int(w["is_anomalous"]) == int(r["anomalous"])
    # and to 1e-6 against the library call the CLI makes
    from waferscope.cli.common import load_model

    det, _ = load_model(None, None, "detector")
    ref = det.score(lot).scores
    assert np.abs(np.array([w["score"] for w in got["wafers"]]) - ref).max() <= 1e-6


def test_heatmaps(client, lot):
    """The default service labels with the default model and draws the heat with the explanation
    network (cnn_gradcam), explaining the class the label model chose."""
    from dataclasses import replace

    from waferscope.cli.common import load_model
    from waferscope.explain import explain
    from waferscope.models.classifiers import DEFAULT_FOR_EXPLANATIONS, DEFAULT_FOR_LABELS

    few = lot.subset([0, 5, 9])
    cls = client.post("/v1/classify?heatmap=1", json=_json(few)).json()["wafers"]
    clf, _ = load_model(None, None, "classifier", DEFAULT_FOR_LABELS)
    explainer, _ = load_model(None, DEFAULT_FOR_EXPLANATIONS, "classifier")
    chosen = np.asarray(clf.classes_, dtype=object)[clf.predict_proba(few).argmax(1)].astype(str)
    assert [w["class"] for w in cls] == list(chosen)
    assert client.get("/health").json()["classifier"]["gradcam_from"] == f"bundled ({DEFAULT_FOR_EXPLANATIONS})"
    ref = explain(explainer, replace(few, labels=chosen), progress=False, target="label").heat
    for w, m, h in zip(cls, few.maps, ref):
        heat = np.array(w["heatmap"])
        assert heat.shape == m.shape and heat.min() >= 0 and heat.max() <= 1
        assert np.all(heat[m == 0] == 0) and np.abs(heat - h).max() <= 1e-4  # rounded to 4 decimals
    plain = client.post("/v1/classify", json=_json(few)).json()["wafers"]
    assert [w["probabilities"] for w in plain] == [w["probabilities"] for w in cls]
    sc = client.post("/v1/score?heatmap=1", json=_json(few)).json()["wafers"]
    assert all(np.array(w["heatmap"]).shape == m.shape for w, m in zip(sc, few.maps))


def test_concurrent_requests_batch_to_the_same_answers(client, lot):
    single = [client.post("/v1/classify", json=_json(lot.subset([i]))).json()["wafers"][0] for i in range(len(lot))]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda i: client.post("/v1/classify", json=_json(lot.subset([i]))).json()["wafers"][0],
                                 range(len(lot))))
        scores = list(pool.map(lambda i: client.post("/v1/score", json=_json(lot.subset([i]))).json()["wafers"][0],
                               range(len(lot))))
    for a, b in zip(single, together):
        assert a["class"] == b["class"]
        assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in a["probabilities"]) <= 1e-6
    whole = client.post("/v1/score", json=_json(lot)).json()["wafers"]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(scores, whole)) <= 1e-6


def test_page_is_served_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="file"' in r.text and "/v1/classify" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN: nothing outside this server


def test_real_uvicorn_on_loopback(lot):
    import httpx

    # Its own app: uvicorn's shutdown runs the app's lifespan, which stops the model threads.
    app = default_app()
    with running_server(app) as url:
        assert httpx.get(url + "/health").json()["status"] == "ok"
        r = httpx.post(url + "/v1/classify", json=_json(lot.subset([0, 1, 2])), timeout=30)
        assert r.status_code == 200 and len(r.json()["wafers"]) == 3
        ref = TestClient(app).post("/v1/classify", json=_json(lot.subset([0, 1, 2]))).json()
        assert r.json() == ref
        r = httpx.post(url + "/v1/score", json={"maps": []}, timeout=30)
        assert r.status_code == 400 and "empty" in r.json()["error"]
    # after shutdown a request is refused at once (503), it does not wait for a stopped thread
    r = TestClient(app).post("/v1/score", json=_json(lot.subset([0])))
    assert r.status_code == 503 and "shutting down" in r.json()["error"]


# ---- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, words", [
    ({"maps": []}, 400, "empty list"),
    ({"maps": [[[0, 1, 1], [1, 2]]]}, 400, "ragged rows"),
    ({"maps": [[[0, 1], [7, 1]]]}, 400, "die values must be 0 (no die), 1 (pass) or 2 (fail); found [7]"),
    ({"maps": [[[0, 1], [1.5, 1]]]}, 400, "found [1.5]"),
    ({"maps": [[["a", 1], [1, 1]]]}, 400, "die values must be numbers"),
    ({"maps": [[0, 1, 2]]}, 400, "wrap it"),
    ({"grids": []}, 400, 'expected a JSON object {"maps"'),
    ({"maps": [[[1]], [[1]]], "ids": ["a"]}, 400, '"ids" must be a list of 2'),
    ({"maps": [[[1] * 513]]}, 413, "limit is 512"),
    ({"maps": [[[1]]] * 1025}, 413, "too many maps: 1025"),
])
def test_bad_json_maps(client, body, status, words):
    for path in ("/v1/classify", "/v1/score"):
        r = client.post(path, json=body)
        assert r.status_code == status, r.text
        assert words in r.json()["error"]


def test_bad_requests(client):
    r = client.post("/v1/classify", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/v1/classify", content=b"1,2", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]
    r = client.post("/v1/classify?heatmap=yes please", json={"maps": [[[1]]]})
    assert r.status_code == 400 and "heatmap" in r.json()["error"]
    r = client.post("/v1/classify", files={"upload": ("a.parquet", b"PAR1")})
    assert r.status_code == 400 and 'field "file"' in r.json()["error"]
    r = client.post("/v1/score", files={"file": ("a.parquet", b"not parquet")})
    assert r.status_code == 400 and r.json()["error"].startswith("a.parquet: not a Parquet file")
    r = client.post("/v1/score", files={"file": ("a.npz", b"")})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}


def test_pickle_uploads_are_refused(client, tmp_path):
    import pickle

    payload = pickle.dumps({"maps": [np.ones((3, 3))]})
    for name in ("LSWMD.pkl", "maps.pickle", "innocent.parquet", "noext"):
        data = payload if name != "LSWMD.pkl" else b"anything"
        r = client.post("/v1/classify", files={"file": (name, data)})
        assert r.status_code == 415, (name, r.text)
        assert "pickle uploads are refused" in r.json()["error"] and "waferscope data import" in r.json()["error"]


def test_limits_are_configurable(lot):
    from waferscope.cli.serve import resolve_models
    from waferscope.serve import create_app

    m = resolve_models(None, None, None, None, None, None)
    small = TestClient(create_app(m["classifier"], m["detector"], threshold=None, explainer=m["explainer"],
                                  limits=Limits(max_maps=4, max_side=60, max_body_bytes=40_000, max_heatmap_maps=2)))
    r = small.post("/v1/classify", json=_json(lot.subset(range(5))))
    assert r.status_code == 413 and "limit is 4" in r.json()["error"]
    r = small.post("/v1/classify?heatmap=1", json=_json(lot.subset(range(3))))
    assert r.status_code == 413 and "heatmap" in r.json()["error"]
    r = small.post("/v1/classify", content=b" " * 40_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "40000 bytes" in r.json()["error"]
    big = np.ones((61, 30), dtype=np.uint8)
    r = small.post("/v1/score", json={"maps": [big.tolist()]})
    assert r.status_code == 413 and "61×30" in r.json()["error"]
    r = small.post("/v1/score", json={"maps": [lot.maps[0].tolist()]})
    assert r.status_code == 200 and "is_anomalous" not in r.json()["wafers"][0]  # no threshold given


def test_heatmap_needs_a_network():
    from waferscope.base import load_bundled
    from waferscope.models.classifiers import BUNDLED
    from waferscope.serve import create_app

    for name in BUNDLED:  # whichever bundled classifier is not a network (gbm today)
        clf = load_bundled(BUNDLED, name, "classifier")
        if getattr(clf, "network_", None) is None:
            break
    else:
        pytest.skip("every bundled classifier is a network")
    from waferscope.cli.common import load_model

    det, _ = load_model(None, None, "detector")
    r = TestClient(create_app(clf, det)).post("/v1/classify?heatmap=1", json={"maps": [[[1, 2], [1, 1]]]})
    assert r.status_code == 400 and "no Grad-CAM" in r.json()["error"]


# ---- the command ----------------------------------------------------------------------------------
def test_cli_model_choice():
    from waferscope.cli.serve import resolve_models
    from waferscope.models.classifiers import BUNDLED as CB, DEFAULT_FOR_LABELS
    from waferscope.models.detectors import BUNDLED as DB

    det_name = next(iter(DB))
    m = resolve_models(DB[det_name], None, None, None, None, None)  # --run with a detector run
    assert m["detector_source"] == str(DB[det_name]) and m["classifier_source"] == f"bundled ({DEFAULT_FOR_LABELS})"
    m = resolve_models(CB[DEFAULT_FOR_LABELS], None, None, None, None, None)  # --run with a classifier run
    assert m["classifier_source"] == str(CB[DEFAULT_FOR_LABELS])
    shared = sorted(set(CB) & set(DB))
    if shared:  # --bundled NAME sets each kind that ships NAME; --detector overrides it
        m = resolve_models(None, shared[0], None, None, None, det_name)
        assert m["classifier_source"] == f"bundled ({shared[0]})" and m["detector_source"] == f"bundled ({det_name})"
    # no options: both name the bundled model that was loaded (this said "bundled None" for the detector)
    from waferscope.models.detectors import DEFAULT_DETECTOR

    m = resolve_models(None, None, None, None, None, None)
    assert m["detector_source"] == f"bundled ({DEFAULT_DETECTOR})" and "None" not in m["classifier_source"]


def test_cli_errors(capsys, tmp_path):
    from waferscope.models.detectors import BUNDLED as DB

    run = next(iter(DB.values()))
    code, _, err = invoke(capsys, "serve", "--run", run, "--bundled", "x", "--port", free_port())
    assert code == 2 and "give --run or --bundled, not both" in err
    code, _, err = invoke(capsys, "serve", "--bundled", "no-such-model", "--port", free_port())
    assert code == 2 and "unknown bundled model 'no-such-model'" in err
    code, _, err = invoke(capsys, "serve", "--run", run, "--detector-run", run, "--port", free_port())
    assert code == 2 and "--run holds a detector" in err
    code, _, err = invoke(capsys, "serve", "--run", tmp_path, "--port", free_port())
    assert code == 2 and "model.json is missing" in err
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = invoke(capsys, "serve", "--port", s.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1" in err


def test_upload_npy_stack_and_object_arrays(client, tmp_path):
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((3, 20, 20), dtype=np.uint8))
    r = client.post("/v1/score", files={"file": ("stack 7.npy", buf.getvalue())})
    assert r.status_code == 200 and len(r.json()["wafers"]) == 3
    assert all(w["id"].startswith("stack_7") for w in r.json()["wafers"])  # ids name the uploaded file
    # an .npy holding a pickled object array is never unpickled (the loaders use allow_pickle=False)
    buf = io.BytesIO()
    np.save(buf, np.array([np.ones((2, 2)), np.ones((3, 3))], dtype=object), allow_pickle=True)
    r = client.post("/v1/score", files={"file": ("objects.npy", buf.getvalue())})
    assert r.status_code == 400 and r.json()["error"].startswith("objects.npy: ")
