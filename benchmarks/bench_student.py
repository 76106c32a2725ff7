"""Throughput of the distilled student (``kd_student``) on CPU: wafers classified per second.

    python benchmarks/bench_student.py                       # an untrained student (speed needs no weights)
    python benchmarks/bench_student.py --run runs/kd_student  # a fitted run directory
    python benchmarks/bench_student.py --threads 2 --n 20000

Three measurements, each the best of ``--repeats`` timed passes after a warm-up, in wall-clock
wafers/s and in wafers per CPU-second (``waferscope.benchmark.measure.best_rate``):

- ``network``: the fused network on ready one-hot tensors (the model's own cost);
- ``from resized maps``: uint8 S×S die states → one-hot in torch → network (a caller that keeps
  maps at the model size, e.g. a streaming tester);
- ``from raw maps``: ``predict_proba`` on a WaferDataset of variable-size maps (resize included).

Raw maps: the real dev maps repeated to ``--n`` (their sizes vary from 22×24 to 212×172 dies).
The acceptance target is ≥ 20,000 wafers/s on 2 cores.
"""

from __future__ import annotations

import argparse

from waferscope.benchmark.measure import add_speed_arguments, best_rate, environment_line
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a fitted kd_student run directory (default: an untrained student)")
    ap.add_argument("--width", type=int, default=None, help="default: kd_student's")
    ap.add_argument("--arch", default=None, choices=["cnn", "patchify", "separable"], help="default: kd_student's")
    ap.add_argument("--head", type=int, default=None, help="default: kd_student's")
    ap.add_argument("--size", type=int, default=48)
    add_speed_arguments(ap, n=20000, repeats=5)
    ap.add_argument("--dev", default=DEV)
    args = ap.parse_args(argv)

    import torch

    from waferscope.base import load_run
    from waferscope.data import WaferDataset, load
    from waferscope.data.classes import CLASSES
    from waferscope.data.preprocess import resize_maps
    from waferscope.models.classifiers.distill import DistilledStudentClassifier

    torch.set_num_threads(args.threads)
    if args.run:
        model = load_run(args.run, kind="classifier")
    else:
        given = {k: getattr(args, k) for k in ("width", "arch", "head") if getattr(args, k) is not None}
        model = DistilledStudentClassifier(size=args.size, **given)
        model.classes_, model.in_chans_ = list(CLASSES), 3
        model.network_ = model.build_network(3, len(CLASSES)).eval()
        model.teacher_parameters_ = 0
    try:
        dev = load(args.dev)
        maps = [dev.maps[i % len(dev)] for i in range(args.n)]
        source = f"real dev maps ×{args.n / len(dev):.1f}"
    except Exception:  # no shared data: synthetic maps of the usual sizes
        from waferscope.data.synthetic import generate

        maps, source = generate(args.n, seed=0).maps, "synthetic maps"
    data = WaferDataset.from_maps(maps, validate=False)
    x_u8 = resize_maps(maps, int(model.input_size))
    x = model.encode_fast(x_u8)
    net = model.inference_network()

    def network_only():
        with torch.inference_mode():
            for i in range(0, len(x), 4096):
                net(x[i:i + 4096])

    # On a machine shared with other jobs the wall clock measures the share the scheduler gave us;
    # wafers per CPU-second × cores is what the same cores would do unshared (the batches are
    # data-parallel, so it scales with cores up to memory bandwidth).
    rates = {
        "network": best_rate(network_only, len(x), args.repeats),
        "from resized maps": best_rate(lambda: model._logits(x_u8), len(x), args.repeats),
        "from raw maps": best_rate(lambda: model.predict_proba(data), len(x), args.repeats),
    }
    print(f"kd_student {getattr(model, 'arch', 'patchify')} width {model.width}, {model.n_parameters():,} parameters, {model.input_size}px input; "
          f"{args.n:,} {source}")
    print(f"  {environment_line(args.threads)}; 'per CPU-s × {args.threads}' = what {args.threads} unshared core(s) would do")
    for name, rate in rates.items():
        wall, cpu = rate["best"], rate["per_cpu_s"]
        print(f"  {name:>18}: {wall:10,.0f} wafers/s wall-clock, {cpu:10,.0f} per CPU-s, "
              f"{cpu * args.threads:10,.0f} per CPU-s × {args.threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
