"""End-to-end speed of the bundled classifier: variable-size wafer maps in, class labels out.

    python benchmarks/bench_classify.py                 # the default bundled model, 2 threads, 20,000 maps
    python benchmarks/bench_classify.py --bundled gbm   # another bundled one
    python benchmarks/bench_classify.py --run RUN --threads 1 --n 5000

The maps are the real dev maps (22×24 to 51×50 dies in the stored set) repeated to ``--n``, held
in a WaferDataset as any loader returns them; the timed call is ``classifier.predict(dataset)``
(nearest resize, one-hot encoding, the network, arg-max). Reported: the best of ``--repeats``
timed passes after one warm-up pass, and the median, plus wafers per CPU-second (the speed a
busy shared machine cannot hide: the wall clock there counts other jobs' time). Target: ≥ 5,000 wafers/s on 2 cores.
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
    ap.add_argument("--dev", default=DEV)
    args = ap.parse_args(argv)

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
    dev = load(args.dev)
    data = dev.subset(np.arange(args.n) % len(dev))
    warm = np.arange(min(2048, len(data)))
    assert len(clf.predict(data.subset(warm))) == len(warm)  # warm-up, and one label per map
    rate = best_rate(lambda: clf.predict(data), len(data), args.repeats, warmup=False)
    params = clf.get_params()
    size = f"input {params['size']}px" if params.get("size") else "features of each map's own die grid"
    print(f"model: {clf.registry_name} ({args.run or f'bundled: {which}'}), {size}, {clf.n_parameters():,} parameters")
    print(f"{environment_line(args.threads)}; {len(data):,} variable-size maps per pass")
    print(f"wafers/s: best {rate['best']:,.0f}, median {rate['median']:,.0f}")
    # On a machine shared with other jobs the wall clock understates the speed; CPU time does not.
    print(f"wafers per CPU-second (all threads): {rate['per_cpu_s']:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
