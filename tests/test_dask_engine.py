"""waferscope.scale: --engine local and --engine dask give the same results, one file per partition."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from waferscope.cli.common import load_model
from waferscope.data.io_parquet import write_parquet
from waferscope.data.synthetic import generate
from waferscope.errors import WaferscopeError
from waferscope.scale import list_partitions, run_partitions

PARTS = 3


@pytest.fixture(scope="module")
def partitions(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("parts")
    for i in range(PARTS):
        write_parquet(generate(6, seed=10 + i), src / f"part-{i:03d}.parquet")
    return src


@pytest.fixture(scope="module")
def classifier():
    return load_model(None, None, "classifier")[0]  # the bundled default (cnn_distilled) exports


@pytest.fixture(scope="module")
def detector():
    return load_model(None, "autoencoder", "detector")[0]


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker LocalCluster for the module: starting workers (they import torch) dominates."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def classifier_onnx(classifier, tmp_path_factory) -> Path:
    """Exported once: each export traces and verifies the model (seconds)."""
    from waferscope.export import export_onnx

    return export_onnx(classifier, tmp_path_factory.mktemp("onnx") / "classifier.onnx")


@pytest.fixture(scope="module")
def detector_onnx(detector, tmp_path_factory) -> Path:
    from waferscope.export import export_onnx

    return export_onnx(detector, tmp_path_factory.mktemp("onnx") / "detector.onnx")


def _read_all(files) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(files)], ignore_index=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("which", ["classifier_onnx", "detector_onnx"])
def test_local_equals_dask(which, partitions, cluster, tmp_path, request):
    model = request.getfixturevalue(which)
    local_files, local_rows, *_ = run_partitions(model, str(partitions), tmp_path / "local", engine="local")
    dask_files, dask_rows, *_ = run_partitions(model, str(partitions), tmp_path / "dask", engine="dask",
                                           scheduler=cluster.scheduler_address)
    assert local_rows == dask_rows == 6 * PARTS
    assert sorted(f.name for f in local_files) == sorted(f.name for f in dask_files) \
        == [p.name for p in list_partitions(str(partitions))]
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == sorted(f.name for f in dask_files)
    a, b = _read_all(local_files), _read_all(dask_files)
    assert list(a.columns) == list(b.columns)
    assert a["id"].tolist() == b["id"].tolist()
    assert {"id", "label", "lot", "wafer_index"} <= set(a.columns)
    num = [c for c in a.columns if c.startswith("p_") or c == "score"]
    assert num
    np.testing.assert_allclose(a[num].to_numpy(), b[num].to_numpy(), atol=1e-6, rtol=0)
    if which == "classifier_onnx":
        assert a["predicted"].tolist() == b["predicted"].tolist()


def test_non_empty_out_refused_unless_overwrite(classifier_onnx, partitions, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.parquet").write_bytes(b"old")
    with pytest.raises(WaferscopeError, match="not empty"):
        run_partitions(classifier_onnx, str(partitions), out)
    assert (out / "stale.parquet").exists()
    files, *_ = run_partitions(classifier_onnx, str(partitions), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)


def test_unreachable_scheduler_is_a_clear_error(classifier_onnx, partitions, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(WaferscopeError, match="scheduler") as info:
        run_partitions(classifier_onnx, str(partitions), tmp_path / "out", engine="dask", scheduler=address,
                       timeout=2)
    assert time.monotonic() - start < 15
    assert address in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_own_local_cluster_matches_local(classifier, partitions, tmp_path):
    """No --scheduler: run_partitions starts (and stops) its own 2-worker LocalCluster."""
    local_files, *_ = run_partitions(classifier, str(partitions), tmp_path / "local")
    dask_files, rows, *_ = run_partitions(classifier, str(partitions), tmp_path / "dask", engine="dask", workers=2)
    assert rows == 6 * PARTS
    a, b = _read_all(local_files), _read_all(dask_files)
    assert a["predicted"].tolist() == b["predicted"].tolist()
    num = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(a[num].to_numpy(), b[num].to_numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_corrupt_partition_names_the_file(engine, classifier_onnx, partitions, cluster, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in list_partitions(str(partitions)):
        (src / p.name).write_bytes(p.read_bytes())
    bad = src / "part-999.parquet"
    bad.write_bytes(b"this is not parquet")
    out = tmp_path / "out"
    with pytest.raises(WaferscopeError) as info:
        run_partitions(classifier_onnx, str(src), out, engine=engine,
                       scheduler=cluster.scheduler_address if engine == "dask" else None)
    assert bad.name in str(info.value)
    assert not out.exists() or not any(out.iterdir())


def test_onnx_file_gives_the_same_results_as_the_estimator(classifier, classifier_onnx, partitions, tmp_path):
    a, *_ = run_partitions(classifier, str(partitions), tmp_path / "est")
    b, *_ = run_partitions(classifier_onnx, str(partitions), tmp_path / "onnx")
    assert _read_all(a).equals(_read_all(b))


def test_not_an_onnx_file_is_refused(partitions, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"nope")
    with pytest.raises(WaferscopeError, match="model.onnx"):
        run_partitions(bogus, str(partitions), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [("classify", "predict"), ("detect", "score", "--bundled", "autoencoder")])
def test_cli_engine_dask_writes_one_parquet_per_partition(command, partitions, cluster, tmp_path, capsys):
    from clitools import invoke

    out = tmp_path / "out"
    code, _, err = invoke(capsys, *command, "--data", partitions, "--out", out, "--engine", "dask",
                          "--scheduler", cluster.scheduler_address)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in list_partitions(str(partitions))]
    assert len(_read_all(out.iterdir())) == 6 * PARTS
    code, _, err = invoke(capsys, *command, "--data", partitions, "--out", out, "--engine", "dask",
                          "--scheduler", cluster.scheduler_address)
    assert code != 0 and "not empty" in err


def test_dask_output_equals_the_plain_cli_csv(partitions, cluster, tmp_path, capsys):
    """The same maps give the same classes and probabilities (CSV rounding) on both CLI paths."""
    from clitools import invoke

    first = list_partitions(str(partitions))[0]
    code, _, err = invoke(capsys, "classify", "predict", "--data", first, "--out", tmp_path / "p.csv")
    assert code == 0, err
    code, _, err = invoke(capsys, "classify", "predict", "--data", partitions, "--out", tmp_path / "d",
                          "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert code == 0, err
    plain = pd.read_csv(tmp_path / "p.csv")
    dask = pd.read_parquet(tmp_path / "d" / first.name)
    both = plain.merge(dask, on="id", suffixes=("_csv", "_dask"))
    assert len(both) == len(plain) == len(dask)
    assert (both["predicted_csv"] == both["predicted_dask"]).all()
    for c in [c for c in plain.columns if c.startswith("p_")]:
        np.testing.assert_allclose(both[f"{c}_csv"], both[f"{c}_dask"], atol=1e-5)  # torch vs onnxruntime, then 6-decimal CSV
