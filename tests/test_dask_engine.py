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
    return load_model(None, "cnn_distilled", "classifier")[0]  # the bundled network that exports to ONNX


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
    assert not out.exists()  # the workers write beside it; it appears only when every partition is done
    assert not list(tmp_path.glob(".out.part-*"))  # nor is the staging folder left behind


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
    code, _, err = invoke(capsys, "classify", "predict", "--data", first, "--out", tmp_path / "p.csv", "--bundled", "cnn_distilled")
    assert code == 0, err
    code, _, err = invoke(capsys, "classify", "predict", "--data", partitions, "--out", tmp_path / "d",
                          "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert code == 0, err
    assert "bundled (cnn_distilled): gbm, the default, does not export to ONNX" in err  # says which model ran
    plain = pd.read_csv(tmp_path / "p.csv")
    dask = pd.read_parquet(tmp_path / "d" / first.name)
    both = plain.merge(dask, on="id", suffixes=("_csv", "_dask"))
    assert len(both) == len(plain) == len(dask)
    assert (both["predicted_csv"] == both["predicted_dask"]).all()
    for c in [c for c in plain.columns if c.startswith("p_")]:
        np.testing.assert_allclose(both[f"{c}_csv"], both[f"{c}_dask"], atol=1e-5)  # torch vs onnxruntime, then 6-decimal CSV


# ---- the plain commands' options on --engine dask: the same output as the single-process path ----
def _dask(partitions, cluster, out, *args):
    return ("--data", partitions, "--out", out, *args, "--engine", "dask", "--scheduler", cluster.scheduler_address)


def _plain_data(partitions) -> list:
    """Every partition as a --data of the plain command: the same maps in the same order."""
    return [a for p in list_partitions(str(partitions)) for a in ("--data", p)]


def _mix_line(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("class mix"))


@pytest.mark.parametrize("prior", ["wm811k", "estimate", "Center=3,none=85,Loc=2,Edge-Loc=2,Edge-Ring=2,Scratch=1,"
                                   "Random=1,Donut=1,Near-full=1"])
def test_prior_on_dask_equals_the_plain_csv(prior, partitions, cluster, tmp_path, capsys):
    """A given mix is applied per row; ``estimate`` learns one mix from all partitions together, as
    the plain path does from its whole batch (so the Dask result differs from estimating per partition)."""
    from clitools import invoke

    # the Dask engine runs the bundled ONNX-exportable network by default; the plain path is given it
    code, _, plain_err = invoke(capsys, "classify", "predict", *_plain_data(partitions), "--out", tmp_path / "p.csv",
                                "--prior", prior, "--bundled", "cnn_distilled")
    assert code == 0, plain_err
    code, _, dask_err = invoke(capsys, "classify", "predict", *_dask(partitions, cluster, tmp_path / "d"),
                               "--prior", prior)
    assert code == 0, dask_err
    assert _mix_line(dask_err) == _mix_line(plain_err)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [p.name for p in list_partitions(str(partitions))]
    plain = pd.read_csv(tmp_path / "p.csv")
    dask = _read_all((tmp_path / "d").iterdir())
    assert plain["id"].tolist() == dask["id"].tolist()
    assert plain["predicted"].tolist() == dask["predicted"].tolist()
    cols = [c for c in plain.columns if c.startswith("p_")]
    np.testing.assert_allclose(plain[cols].to_numpy(), dask[cols].to_numpy(), atol=1e-5, rtol=0)
    if prior != "estimate":
        return
    code, _, err = invoke(capsys, "classify", "predict", "--data", list_partitions(str(partitions))[0],
                          "--out", tmp_path / "one.csv", "--prior", prior, "--bundled", "cnn_distilled")
    assert code == 0, err
    assert _mix_line(err) != _mix_line(dask_err)  # the mix of one partition is not the archive's


@pytest.mark.parametrize("args, problem", [
    (("--prior", "Center=1"), "no weight for"),
    (("--prior", "nonsense"), "expected one of"),
    (("--pass-bins", "1"), "Parquet partitions hold die states already"),
    (("--retest", "first"), "--retest does not apply with --engine dask"),
])
def test_bad_classify_options_on_dask_are_one_clear_error(args, problem, partitions, cluster, tmp_path, capsys):
    from clitools import invoke

    code, _, err = invoke(capsys, "classify", "predict", *_dask(partitions, cluster, tmp_path / "d"), *args)
    assert code == 2 and problem in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def duplicate_ids(tmp_path_factory) -> Path:
    """Two partitions whose ids repeat, within and across partitions, and need making file-safe."""
    src = tmp_path_factory.mktemp("dups")
    for i, ids in enumerate([["w/1", "w/1", "x"], ["w/1", "x", "lot 7#y"]]):
        ds = generate(3, seed=30 + i)
        ds.meta["id"] = ids
        write_parquet(ds, src / f"part-{i}.parquet")
    return src


@pytest.fixture(scope="module")
def threshold_run(detector, partitions, tmp_path_factory) -> Path:
    """The bundled autoencoder as a run directory whose threshold splits the partitions' maps in two
    (mid-way between two scores, far from both, so torch and onnxruntime agree on every side)."""
    import json
    import shutil

    from waferscope.data import load
    from waferscope.models.detectors import BUNDLED

    run = tmp_path_factory.mktemp("run") / "ae"
    shutil.copytree(BUNDLED["autoencoder"], run)
    scores = np.sort(np.concatenate([detector.score(load(str(p))).scores for p in list_partitions(str(partitions))]))
    k = len(scores) // 3
    (run / "threshold.json").write_text(json.dumps({"threshold": float(scores[k - 1] + scores[k]) / 2,
                                                    "method": "test"}))
    return run


def test_maps_on_dask_equal_the_plain_maps(duplicate_ids, cluster, tmp_path, capsys):
    from clitools import invoke

    det = ("detect", "score", "--bundled", "autoencoder")
    code, _, err = invoke(capsys, *det, *_plain_data(duplicate_ids), "--out", tmp_path / "p.csv",
                          "--maps", tmp_path / "pm")
    assert code == 0, err
    code, _, err = invoke(capsys, *det, *_dask(duplicate_ids, cluster, tmp_path / "d"), "--maps", tmp_path / "dm")
    assert code == 0, err
    assert f"maps in {tmp_path / 'dm'}" in err
    names = sorted(p.name for p in (tmp_path / "pm").iterdir())
    assert names == ["lot_7_y.npy", "w_1.npy", "w_1_2.npy", "w_1_3.npy", "x.npy", "x_2.npy"]
    assert sorted(p.name for p in (tmp_path / "dm").iterdir()) == names  # no temp files or folders left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for name in names:
        a, b = np.load(tmp_path / "pm" / name), np.load(tmp_path / "dm" / name)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    code, _, err = invoke(capsys, *det, *_dask(duplicate_ids, cluster, tmp_path / "d2"), "--maps", tmp_path / "dm")
    assert code == 2 and f"{tmp_path / 'dm'}: output directory is not empty" in err
    assert not (tmp_path / "d2").exists()
    (tmp_path / "dm" / "stale.npy").write_bytes(b"old")
    code, _, err = invoke(capsys, *det, *_dask(duplicate_ids, cluster, tmp_path / "d"), "--maps", tmp_path / "dm",
                          "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "dm").iterdir()) == names


def test_run_threshold_on_dask_equals_the_plain_csv(threshold_run, partitions, cluster, tmp_path, capsys):
    from clitools import invoke

    det = ("detect", "score", "--run", threshold_run)
    code, _, plain_err = invoke(capsys, *det, *_plain_data(partitions), "--out", tmp_path / "p.csv")
    assert code == 0, plain_err
    code, _, dask_err = invoke(capsys, *det, *_dask(partitions, cluster, tmp_path / "d"))
    assert code == 0, dask_err
    plain = pd.read_csv(tmp_path / "p.csv")
    dask = _read_all((tmp_path / "d").iterdir())
    assert dask["anomalous"].dtype == bool
    assert 0 < dask["anomalous"].sum() < len(dask)
    assert plain["anomalous"].astype(bool).tolist() == dask["anomalous"].tolist()
    np.testing.assert_allclose(plain["score"], dask["score"], rtol=1e-5)  # the CSV keeps 6 significant digits
    above = f"{int(plain['anomalous'].sum())} above the run's threshold"
    assert above in plain_err and above in dask_err


def _image_partition(path: Path) -> None:
    from waferscope.data.dataset import WaferDataset

    rgb = np.random.default_rng(0).integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    write_parquet(WaferDataset(maps=[rgb], labels=np.array(["good"], dtype=object),
                               meta=pd.DataFrame({"id": ["img-0"]}), kind="image"), path)


def test_bad_detect_input_on_dask_is_one_clear_error(partitions, cluster, tmp_path, capsys):
    """--maps at a file, and a partition of images (the model takes die maps): one error each,
    naming the file; neither --out nor --maps is left behind."""
    from clitools import invoke

    det = ("detect", "score", "--bundled", "autoencoder")
    a_file = tmp_path / "maps.txt"
    a_file.write_text("not a folder")
    code, _, err = invoke(capsys, *det, *_dask(partitions, cluster, tmp_path / "d"), "--maps", a_file)
    assert code == 2 and f"{a_file}: --maps must be a directory" in err
    assert not (tmp_path / "d").exists()
    code, _, err = invoke(capsys, *det, "--data", "synthetic:n=2,seed=0", "--out", tmp_path / "p.csv", "--maps", a_file)
    assert code == 2 and f"{a_file}: --maps must be a directory" in err  # the plain path says the same
    assert not (tmp_path / "p.csv").exists()

    src = tmp_path / "src"
    src.mkdir()
    for p in list_partitions(str(partitions)):
        (src / p.name).write_bytes(p.read_bytes())
    _image_partition(src / "part-999.parquet")
    code, _, err = invoke(capsys, *det, *_dask(src, cluster, tmp_path / "d"), "--maps", tmp_path / "m")
    assert code == 2 and "part-999.parquet" in err and "wafer maps" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "m").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.txt", "src"]  # no hidden staging folder either


def test_estimate_failure_in_the_second_pass_leaves_nothing(classifier_onnx, partitions, cluster, tmp_path,
                                                            monkeypatch):
    """--prior estimate writes a first pass to a hidden folder in --out: a failure after it removes all."""
    from waferscope.models.classifiers.prior import PriorShift
    from waferscope.scale import dask_engine

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(dask_engine, "reprior_partition", broken)
    shift = PriorShift(np.full(9, 1 / 9), "estimate")
    with pytest.raises(OSError, match="disk full"):
        run_partitions(classifier_onnx, str(partitions), tmp_path / "out", prior=shift)
    assert not (tmp_path / "out").exists()


# ---- --abstain on Dask: the open-set scorer runs on the workers, with the same answers ----
@pytest.fixture(scope="module")
def open_set_run(classifier, tmp_path_factory) -> Path:
    """The bundled network as a run directory with an open-set scorer calibrated for it on synthetic
    maps (its own probabilities on other maps than the scorer's references): what
    `classify train --open-set` would save, made in a second."""
    from waferscope.data import WaferDataset
    from waferscope.features.handcrafted import extract_features
    from waferscope.search.discover import fit_scorer, save_open_set

    ref, cal = generate(72, seed=50), generate(36, seed=51)
    feat = extract_features(WaferDataset.concat([ref, cal]).maps, n_jobs=1, progress=False, feature_set="extended")
    model = fit_scorer(feat[:72], ref.labels.astype(str), feat[72:], classifier.predict_proba(cal),
                       classifier.classes_, abstain_rate=0.2)
    run = tmp_path_factory.mktemp("osrun") / "cnn"
    classifier.save(run)
    save_open_set(model, run)
    return run


def test_abstain_on_dask_equals_the_plain_csv(open_set_run, partitions, cluster, tmp_path, capsys):
    """`classify predict --abstain --engine dask`: the workers compute the features and the open-set
    score; the same 'unknown' answers and scores as the single-process CSV, also after --prior."""
    from clitools import invoke

    for prior in ("", "estimate"):
        extra = ("--prior", prior) if prior else ()
        code, _, err = invoke(capsys, "classify", "predict", *_plain_data(partitions), "--out", tmp_path / f"p{prior}.csv",
                              "--run", open_set_run, "--abstain", *extra)
        assert code == 0, err
        code, _, err = invoke(capsys, "classify", "predict", *_dask(partitions, cluster, tmp_path / f"d{prior}"),
                              "--run", open_set_run, "--abstain", *extra)
        assert code == 0, err
        plain = pd.read_csv(tmp_path / f"p{prior}.csv")
        dask = _read_all((tmp_path / f"d{prior}").iterdir())
        assert plain["id"].tolist() == dask["id"].tolist()
        assert plain["predicted"].tolist() == dask["predicted"].tolist()
        unknown = int((dask["predicted"] == "unknown").sum())
        assert 0 < unknown < len(dask)  # the check below means something: some abstained, some not
        assert f"abstained on {unknown} of {len(dask)} maps" in err
        np.testing.assert_allclose(plain["open_set_score"], dask["open_set_score"], atol=1e-4)
    # without --abstain on the same run: no score column, no 'unknown'
    code, _, err = invoke(capsys, "classify", "predict", *_dask(partitions, cluster, tmp_path / "n"), "--run", open_set_run)
    assert code == 0, err
    closed = _read_all((tmp_path / "n").iterdir())
    assert "open_set_score" not in closed and "unknown" not in set(closed["predicted"])


def test_abstain_on_dask_without_a_scorer_is_one_clear_error(partitions, cluster, tmp_path, capsys):
    from clitools import invoke

    code, _, err = invoke(capsys, "classify", "predict", *_dask(partitions, cluster, tmp_path / "d"), "--abstain")
    assert code == 2 and "no open-set scorer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_open_set_with_a_detector_is_refused(open_set_run, detector_onnx, partitions, tmp_path):
    from waferscope.search.discover import load_open_set

    with pytest.raises(WaferscopeError, match="goes with a classifier"):
        run_partitions(detector_onnx, str(partitions), tmp_path / "out", open_set=load_open_set(open_set_run))
    assert not (tmp_path / "out").exists()


# ---- the similar-wafer index of a partitioned archive, embedded on Dask workers ----
def _index_vectors(index) -> np.ndarray:
    return index.index_.reconstruct_n(0, len(index))


def test_index_built_on_dask_equals_the_plain_build(partitions, cluster, tmp_path, capsys):
    """`index build --engine dask`: the same wafers, vectors and neighbours as the single-process build
    of the same partitions (the metric head learnt from the same labelled wafers), and `--add` on
    Dask grows it like the plain --add."""
    from clitools import invoke

    from waferscope.data import load
    from waferscope.search import WaferIndex

    files = list_partitions(str(partitions))
    code, _, err = invoke(capsys, "index", "build", *_plain_data(partitions), "--out", tmp_path / "plain",
                          "--exact", "--threads", "1")
    assert code == 0, err
    code, text, err = invoke(capsys, "index", "build", "--data", partitions, "--out", tmp_path / "dask", "--exact",
                             "--engine", "dask", "--scheduler", cluster.scheduler_address, "--threads", "1")
    assert code == 0, err
    assert f"embedded {6 * PARTS} wafers from {PARTS} partitions on Dask" in text
    plain, dask = WaferIndex.load(tmp_path / "plain"), WaferIndex.load(tmp_path / "dask")
    assert plain.ids_.tolist() == dask.ids_.tolist() and plain.lots_.tolist() == dask.lots_.tolist()
    assert plain.labels_.tolist() == dask.labels_.tolist()
    np.testing.assert_array_equal(plain.thumbs_, dask.thumbs_)
    assert plain.header()["embedding_signature"] == dask.header()["embedding_signature"]
    np.testing.assert_allclose(_index_vectors(plain), _index_vectors(dask), atol=1e-5)
    queries = load(str(files[0]))
    a, b = plain.query(queries, 5), dask.query(queries, 5)
    assert a["ids"].tolist() == b["ids"].tolist()
    # incremental add on Dask: the same as the plain --add
    extra = tmp_path / "more"
    extra.mkdir()
    write_parquet(generate(5, seed=77), extra / "part-new.parquet")
    code, _, err = invoke(capsys, "index", "build", "--data", extra / "part-new.parquet", "--out", tmp_path / "plain",
                          "--add", "--threads", "1")
    assert code == 0, err
    code, _, err = invoke(capsys, "index", "build", "--data", extra, "--out", tmp_path / "dask", "--add",
                          "--engine", "dask", "--scheduler", cluster.scheduler_address, "--threads", "1")
    assert code == 0, err
    plain, dask = WaferIndex.load(tmp_path / "plain"), WaferIndex.load(tmp_path / "dask")
    assert len(plain) == len(dask) == 6 * PARTS + 5 and plain.ids_.tolist() == dask.ids_.tolist()
    np.testing.assert_allclose(_index_vectors(plain), _index_vectors(dask), atol=1e-5)


def test_index_on_dask_bad_input_is_one_clear_error(partitions, cluster, tmp_path, capsys):
    from clitools import invoke

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "part-0.parquet").write_bytes(b"not parquet")
    code, _, err = invoke(capsys, "index", "build", "--data", bad, "--out", tmp_path / "i", "--engine", "dask",
                          "--scheduler", cluster.scheduler_address)
    assert code == 2 and "part-0.parquet" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "i").exists()
    # --add to something that is not an index: refused before any worker is asked
    (tmp_path / "notindex").mkdir()
    code, _, err = invoke(capsys, "index", "build", "--data", partitions, "--out", tmp_path / "notindex", "--add",
                          "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert code == 2 and "not a waferscope index folder" in err
    code, _, err = invoke(capsys, "index", "build", "--data", partitions, "--data", partitions, "--out",
                          tmp_path / "j", "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert code == 2 and "one --data" in err
