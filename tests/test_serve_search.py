"""POST /v1/search (issue #31): neighbours from the index the service was started with, and the
hostile or wrong input around it (no index, a wrong k, image data, a bomb, a pickle, bad maps),
each one JSON 4xx, never a traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clitools import invoke
from servetools import default_app, free_port

warnings.filterwarnings("ignore", message=".*httpx2.*")
from fastapi.testclient import TestClient  # noqa: E402

import waferscope.data as wd  # noqa: E402
from waferscope.data.dataset import WaferDataset  # noqa: E402
from waferscope.search import WaferIndex  # noqa: E402
from waferscope.serve import Limits  # noqa: E402

from test_serve_hostile import Bounded, assert_json_error, npz_bomb  # noqa: E402


@pytest.fixture(scope="module")
def archive():
    return WaferDataset.concat([wd.load(f"synthetic:n=12,seed={s}") for s in (1, 2)])


@pytest.fixture(scope="module")
def index(archive):
    # the default embedding: too few labels here, so the bundled metric head
    return WaferIndex(n_jobs=1).build(archive)


@pytest.fixture(scope="module")
def client(index):
    return TestClient(default_app(index=index, index_source="test-index", limits=Limits(max_maps=16)))


def test_search_json_and_upload_return_lots_ids_and_distances(client, archive, index, tmp_path):
    r = client.post("/v1/search?k=3", json={"maps": [archive.maps[4].tolist(), archive.maps[20].tolist()],
                                            "ids": ["q4", "q20"]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["k"] == 3 and doc["index"] == {"embedding": "metric", "wafers": 24, "source": "test-index"}
    first = doc["wafers"][0]
    assert first["id"] == "q4" and len(first["neighbours"]) == 3
    top = first["neighbours"][0]
    # an archive wafer finds itself first, at distance 0, with its lot and class
    assert top["id"] == archive.ids[4] and top["distance"] == pytest.approx(0, abs=1e-4)
    assert top["lot"] == archive.meta["lot"].iloc[4] and top["class"] == archive.labels[4]
    assert [n["distance"] for n in first["neighbours"]] == sorted(n["distance"] for n in first["neighbours"])
    assert doc["wafers"][1]["neighbours"][0]["id"] == archive.ids[20]
    # the same through an uploaded file, default k, and the same answer as the library
    from waferscope.data.io_parquet import write_parquet

    write_parquet(archive.subset([4]), tmp_path / "one.parquet")
    r = client.post("/v1/search", files={"file": ("one.parquet", (tmp_path / "one.parquet").read_bytes())})
    assert r.status_code == 200, r.text
    got = r.json()["wafers"][0]["neighbours"]
    want = index.query(archive.subset([4]), k=10)
    assert [n["id"] for n in got] == want["ids"][0].tolist()
    assert client.get("/health").json()["index"]["wafers"] == 24


@pytest.mark.parametrize("k", ["0", "101", "-1", "abc", "1e3", "99999999999"])
def test_a_bad_k_is_400(client, archive, k):
    r = client.post(f"/v1/search?k={k}", json={"maps": [archive.maps[0].tolist()]})
    assert_json_error(r, 400)
    assert "?k=" in r.json()["error"]


def test_no_index_is_409_before_the_body_is_read():
    c = TestClient(default_app())
    r = c.post("/v1/search", content=b"not even json", headers={"content-type": "application/json"})
    assert_json_error(r, 409)
    assert "--index" in r.json()["error"]
    assert c.get("/health").json()["index"] is None


def test_wrong_kind_and_hostile_uploads(client, tmp_path):
    from waferscope.data.io_parquet import write_parquet

    images = WaferDataset.from_maps([np.zeros((8, 8, 3), np.uint8)] * 2, kind="image")
    write_parquet(images, tmp_path / "img.parquet")
    r = client.post("/v1/search", files={"file": ("img.parquet", (tmp_path / "img.parquet").read_bytes())})
    assert_json_error(r, 400)
    assert "image" in r.json()["error"] and "wafer maps" in r.json()["error"]
    bomb = npz_bomb(tmp_path / "bomb.npz")
    with Bounded():
        r = client.post("/v1/search", files={"file": ("bomb.npz", bomb.read_bytes())})
    assert_json_error(r, 413)
    assert_json_error(client.post("/v1/search", files={"file": ("x.pkl", b"\x80\x04K\x01.")}), 415)
    for doc, words in (({"maps": []}, "no maps"), ({"maps": [[[0, 7]]]}, "die values"),
                       ({"maps": [[[1]]] * 17}, "max_maps"), ({"grids": []}, "maps")):
        r = client.post("/v1/search", json=doc)
        assert r.status_code in (400, 413), (doc, r.text)
        assert_json_error(r, r.status_code)
    assert_json_error(client.post("/v1/search", content=b"x", headers={"content-type": "text/plain"}), 415)


def test_cli_serve_refuses_a_bad_index_in_one_line(capsys, tmp_path):
    code, _, err = invoke(capsys, "serve", "--index", tmp_path, "--port", str(free_port()))
    assert code == 2 and "not a waferscope index folder" in err and len(err.strip().splitlines()) == 1


def test_search_with_maps_returns_each_neighbours_stored_thumbnail(client, archive, index):
    r = client.post("/v1/search?k=4&maps=1", json={"maps": [archive.maps[7].tolist()]})
    assert r.status_code == 200, r.text
    nbs = r.json()["wafers"][0]["neighbours"]
    assert len(nbs) == 4
    top = np.asarray(nbs[0]["map"], dtype=np.uint8)
    assert top.shape == (index.thumb_size, index.thumb_size)
    np.testing.assert_array_equal(top, index.thumbnail(7))  # the archive wafer itself comes first
    assert "map" not in client.post("/v1/search?k=4", json={"maps": [archive.maps[7].tolist()]}).json()["wafers"][0]["neighbours"][0]
