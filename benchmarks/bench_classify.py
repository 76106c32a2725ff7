"""End-to-end speed of the bundled classifier: variable-size wafer maps in, class labels out.

    python benchmarks/bench_classify.py                 # the default bundled model, 2 threads, 20,000 maps
    python benchmarks/bench_classify.py --bundled gbm   # another bundled one
    python benchmarks/bench_classify.py --run RUN --threads 1 --n 5000
    python benchmarks/bench_classify.py --bundled gbm --profile  # where a feature model's time goes
    python benchmarks/bench_classify.py --grid-sizes 50 100 200 300  # cost vs grid size, clean wafers

The maps are the real dev maps (22×24 to 51×50 dies in the stored set) repeated to ``--n``, held
in a WaferDataset as any loader returns them; the timed call is ``classifier.predict(dataset)``
(for ``gbm``: canonical view, compiled features, tree walk; for a network: input preparation, the
network, arg-max). Reported: the best of ``--repeats``
timed passes after one warm-up pass, and the median, plus wafers per CPU-second (the speed a
busy shared machine cannot hide: the wall clock there counts other jobs' time; it counts every
thread of this process, which is where gbm's features and tree walk run).
Target: ≥ 5,000 wafers/s on 2 cores.

``--profile`` (``gbm``): CPU milliseconds per map of the canonical view, the compiled features and
the tree walk, in one thread on the first 1,000 dev maps, so 2 cores give at most 2,000 / (sum)
wafers/s.
"""

from __future__ import annotations

import argparse

from waferscope.benchmark.measure import add_speed_arguments, best_rate, environment_line
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a classifier run directory (default: a bundled model)")
    ap.add_argument("--bundled", help="without --run: which bundled model (default: the one `classify` uses)")
    add_speed_arguments(ap, n=20000, repeats=5)
    ap.add_argument("--dev", default=DEV, help="the maps to time (default: the shared WM-811K dev maps)")
    ap.add_argument("--profile", action="store_true", help="CPU time per map of each step of gbm (one thread)")
    ap.add_argument("--grid-sizes", type=int, nargs="+", metavar="DIES",
                    help="instead: ms per map on clean round wafers this many dies across (1 %% and 5 %% random "
                         "fails, 20 wafers each, one thread; no shared data needed)")
    args = ap.parse_args(argv)
    if args.grid_sizes:
        return grid_sizes(args)
    if args.dev == DEV:  # a fresh clone has no ../shared: say so, not a traceback
        from waferscope.data.paths import SharedDataMissing, require_shared

        try:
            require_shared(DEV_MAPS, "--dev FILE (real maps of the sizes you classify; the speed depends on them)")
        except SharedDataMissing as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.profile:
        return profile(args)

    import numpy as np
    import torch

    from waferscope.base import load_run
    from waferscope.data import load
    from waferscope.models.classifiers import DEFAULT_FOR_LABELS, load_default

    torch.set_num_threads(args.threads)
    if args.run is not None and args.bundled is not None:
        raise SystemExit("error: give --run or --bundled, not both")
    which = args.bundled or DEFAULT_FOR_LABELS
    clf = load_default(which) if args.run is None else load_run(args.run, kind="classifier")
    if "progress" in clf.get_params():
        clf.set_params(progress=False)  # no bars in the timing
    dev = load(args.dev)
    data = dev.subset(np.arange(args.n) % len(dev))
    warm = np.arange(min(2048, len(data)))
    assert len(clf.predict(data.subset(warm))) == len(warm)  # warm-up, and one label per map
    rate = best_rate(lambda: clf.predict(data), len(data), args.repeats, warmup=False)
    params = clf.get_params()
    size = f"input {params['input_size']}px" if params.get("input_size") else "features of each map's own die grid"
    print(f"model: {clf.registry_name} ({args.run or f'bundled: {which}'}), {size}, {clf.n_parameters():,} parameters")
    print(f"{environment_line(args.threads)}; {len(data):,} variable-size maps per pass")
    print(f"wafers/s: best {rate['best']:,.0f}, median {rate['median']:,.0f}")
    # On a machine shared with other jobs the wall clock understates the speed; CPU time does not.
    print(f"wafers per CPU-second (all threads): {rate['per_cpu_s']:,.0f}")
    return 0


def profile(args) -> int:
    """Per-map CPU time, in one thread, of each step of the bundled gbm: the canonical view, the 120
    compiled features, the tree walk; and of the readable reference features, for comparison. (The
    smaller of CPU and wall time: idle library threads can add CPU time to the process that is not
    this work's.)"""
    import time

    import numpy as np

    from waferscope.benchmark.measure import environment_line
    from waferscope.data import load
    from waferscope.data.preprocess import canonical_map
    from waferscope.features import handcrafted
    from waferscope.features.fast import extended_batch
    from waferscope.models.classifiers import load_default

    maps = [np.asarray(m) for m in load(args.dev).maps[:1000]]
    print(f"{environment_line(1)}; {len(maps)} dev maps, CPU time of this process")

    def timed(fn, arg):
        fn(arg)  # compiled kernels load, per-shape tables fill
        t0, w0 = time.process_time(), time.perf_counter()
        out = fn(arg)
        return out, 1e3 * min(time.process_time() - t0, time.perf_counter() - w0) / len(maps)

    views, ms_view = timed(lambda ms: [canonical_map(m) for m in ms], maps)
    x, ms_feat = timed(extended_batch, views)
    clf = load_default(args.bundled or "gbm")
    clf.set_params(n_jobs=1)
    _, ms_walk = timed(clf.decision_function, x)
    _, ms_ref = timed(lambda ms: [handcrafted.extended_features(m) for m in ms[:200]], views)
    total = ms_view + ms_feat + ms_walk
    for name, ms in (("canonical view", ms_view), ("features (compiled)", ms_feat), ("tree walk", ms_walk)):
        print(f"  {name:22s} {ms:7.3f} ms/map")
    print(f"  {'total':22s} {total:7.3f} ms/map: at most {1e3 / total:,.0f} wafers/s per core, {2e3 / total:,.0f} on 2")
    print(f"  (the readable reference features: {ms_ref * len(maps) / 200:7.3f} ms/map)")
    return 0


def grid_sizes(args) -> int:
    """How the model's cost grows with the grid: ms per map (wall and CPU, one thread, after a warm-up
    pass over the same maps) on clean round wafers of each size, as ``evaluate robustness`` draws them."""
    import time

    import numpy as np

    from waferscope.base import load_run
    from waferscope.benchmark.measure import environment_line
    from waferscope.data import WaferDataset
    from waferscope.evaluate.robustness import clean_wafers
    from waferscope.models.classifiers import DEFAULT_FOR_LABELS, load_default

    clf = load_default(args.bundled or DEFAULT_FOR_LABELS) if args.run is None else load_run(args.run, kind="classifier")
    params = clf.get_params()
    clf.set_params(**{k: v for k, v in (("progress", False), ("n_jobs", 1)) if k in params})
    print(f"model: {clf.registry_name}; {environment_line(1)}; clean round wafers, 20 per size and rate")
    rng = np.random.default_rng(0)
    for side in args.grid_sizes:
        for rate in (0.01, 0.05):
            data = WaferDataset.from_maps(clean_wafers(20, side, side, rng=rng, rate=rate))
            clf.predict(data)  # warm-up: compiled kernels, per-shape tables
            t0, c0 = time.perf_counter(), time.process_time()
            clf.predict(data)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            # CPU time too: on a shared machine the wall clock also counts other jobs' turns
            print(f"  {side:4d} across, {rate:.0%} fails: {1e3 * wall / len(data):7.2f} ms/map "
                  f"({1e3 * cpu / len(data):7.2f} CPU ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
