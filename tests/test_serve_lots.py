"""The lot browser's routes (serve/lotbrowser.py) without a browser: the numbers are waferscope.lots',
pages and filters are consistent, and the service's hardening holds (file limits, page limits,
cross-origin refusal, pickle refusal, dropped sessions)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import fabfiles as ff
from lotfiles import multi_lot
from servetools import default_app, wait_lot_done
from waferscope import lots
from waferscope.serve.schemas import Limits


@pytest.fixture(scope="module")
def small_app():
    return default_app(limits=Limits(max_file_maps=120, max_lot_sessions=2, max_page_maps=50, max_file_bytes=2_000_000))


@pytest.fixture(scope="module")
def client(small_app):
    with TestClient(small_app) as c:
        yield c


@pytest.fixture(scope="module")
def parquet_bytes(tmp_path_factory):
    from waferscope.data.io_parquet import write_parquet

    ds = multi_lot(100, per_lot=20, seed=4)
    path = tmp_path_factory.mktemp("lots") / "day.parquet"
    write_parquet(ds, path)
    return ds, path.read_bytes()


def _open(client, name, data, **kw):
    return client.post("/v1/lots", files={"file": (name, data)}, **kw)


def test_lot_summary_pages_filters_and_csv_are_the_librarys(client, small_app, parquet_bytes):
    ds, data = parquet_bytes
    r = _open(client, "day.parquet", data)
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    head = wait_lot_done(client, sid)
    assert head["progress"] == {"wafers": 100, "classified": 100, "scored": 100, "done": True, "error": None}
    got = pd.DataFrame(head["lots"])
    want = lots.lot_summary(ds)
    assert list(got["lot"]) == list(want["lot"])  # time order (start_time)
    np.testing.assert_allclose(got["yield"], want["yield"])
    # the classes are the served classifier's, the same as POST /v1/classify gives for those maps
    page = client.get(f"/v1/lots/{sid}/wafers", params={"limit": 50, "offset": 50}).json()
    assert page["total"] == 100 and [w["id"] for w in page["wafers"]] == list(ds.ids[50:])
    direct = client.post("/v1/classify", json={"maps": [m.tolist() for m in ds.maps[50:]]}).json()["wafers"]
    assert [w["class"] for w in page["wafers"]] == [w["class"] for w in direct]
    assert all(np.array_equal(np.array(w["map"]), m) for w, m in zip(page["wafers"], ds.maps[50:]))
    # a filter: the counts describe the whole filtered set, the rows obey it, sorted as asked
    lot = want["lot"].iloc[2]
    res = client.get(f"/v1/lots/{sid}/wafers", params={"lot": lot, "sort": "yield", "desc": "1"}).json()
    table = lots.wafer_table(ds)
    mine = table[table["lot"] == lot]
    assert res["counts"]["wafers"] == len(mine) == res["total"]
    assert res["counts"]["yield"] == pytest.approx(mine["pass_dies"].sum() / mine["dies"].sum())
    ys = [w["yield"] for w in res["wafers"]]
    assert ys == sorted(ys, reverse=True)
    csv = pd.read_csv(io.StringIO(client.get(f"/v1/lots/{sid}/wafers.csv", params={"lot": lot, "max_yield": 0.8}).text))
    assert set(csv["id"]) == set(mine.loc[mine["yield"] <= 0.8, "id"])
    views = client.get(f"/v1/lots/{sid}/lot", params={"lot": lot}).json()
    stack = lots.lot_stacks(ds.subset(np.flatnonzero(table["lot"] == lot)), [lot])[lot]
    assert views["stack"]["tested"] == stack.tested.tolist()
    assert len(views["zones"]) == 9 and views["has_bins"] is False


def test_stdf_lot_views_carry_the_files_bins(client, tmp_path):
    bins = {f"W{i}": ff.disc_bins(15, seed=i, fail_bins=(3, 5, 9)) for i in range(3)}
    sid = _open(client, "lot.stdf", ff.stdf_bytes("LOTS", bins)).json()["id"]
    views = client.get(f"/v1/lots/{sid}/lot", params={"lot": "LOTS"}).json()
    assert views["has_bins"] and views["stack"]["rule"] == "origin"
    counted = {p["bin"]: p["dies"] for p in views["pareto"]}
    codes, counts = np.unique(np.concatenate([b[b > 1] for b in bins.values()]), return_counts=True)
    assert counted == dict(zip(codes.tolist(), counts.tolist()))


def test_limits_and_refusals(client, parquet_bytes):
    ds, data = parquet_bytes
    sid = _open(client, "day.parquet", data).json()["id"]
    # a page larger than max_page_maps, bad parameters, an unknown lot
    assert client.get(f"/v1/lots/{sid}/wafers", params={"limit": 51}).status_code == 413
    assert client.get(f"/v1/lots/{sid}/wafers", params={"sort": "nope"}).status_code == 400
    assert client.get(f"/v1/lots/{sid}/wafers", params={"min_score": "x"}).status_code == 400
    assert client.get(f"/v1/lots/{sid}/lot", params={"lot": "no such lot"}).status_code == 404
    # more wafers than max_file_maps (120): refused from the file's metadata
    from waferscope.data.io_parquet import write_parquet

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.parquet"
        write_parquet(multi_lot(130, seed=1), path)
        r = _open(client, "big.parquet", path.read_bytes())
    assert r.status_code == 413 and "big.parquet" in r.json()["error"]
    # the body limit of this route (max_file_bytes), checked before the body is read
    r = _open(client, "huge.parquet", b"\0" * 2_100_000)
    assert r.status_code == 413 and "max_file_bytes" in r.json()["error"]
    # pickle is never unpickled; another site's page cannot upload
    assert _open(client, "a.pkl", b"\x80\x04K\x01.").status_code == 415
    assert _open(client, "day.parquet", data, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/v1/lots", json={"maps": []}).status_code == 415
    # two files held: a third upload drops the oldest, which then answers 404 with a reason
    second = _open(client, "day.parquet", data).json()["id"]
    _open(client, "day.parquet", data)
    r = client.get(f"/v1/lots/{sid}")
    assert r.status_code == 404 and "upload it again" in r.json()["error"]
    assert client.get(f"/v1/lots/{second}").status_code == 200
