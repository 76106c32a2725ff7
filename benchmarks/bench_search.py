"""Similar-wafer search at archive scale: embedding rate, HNSW build rate, query latency, recall, footprint.

    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --sizes 100000            # 10^5
    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --sizes 100000 1000000    # and 10^6

Two parts, both on synthetic wafers (``waferscope.data.synthetic.generate``):

1. Embedding: ``--embed`` synthetic wafers (default 2,000) indexed with the index's default
   embedding (``metric``: the 120 wafer features + the learnt head): ``build`` (fitting the head on
   their labels included) and then ``add`` of as many new wafers (embedding + graph insertion: the
   per-wafer cost of a growing archive), wafers/s on ``--threads``.
2. Graph: for each ``--sizes`` N, N vectors drawn from those embedded wafers plus Gaussian noise
   (``waferscope.evaluate.retrieval.synthetic_vectors``; embedding 10^6 maps at the rate of part 1
   would take hours here), inserted into the index's HNSW graph (faiss ``IndexHNSWFlat``, M=32,
   efConstruction=80, efSearch=64): build vectors/s, recall@10 of the exact 10 nearest (faiss
   ``IndexFlatL2``) over 500 queries, one-query-at-a-time latency p50/p99, bytes per wafer of the
   serialised graph (+1,024 bytes of thumbnail that `index build` keeps unless --no-thumbnails).

Prints the machine line (cores, load average) and one JSON line per measurement; appends them to
``--out`` (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from waferscope.benchmark.measure import environment_line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--embed", type=int, default=2000, help="synthetic wafers really embedded (part 1)")
    ap.add_argument("--embedding", default=None, help="embedding name (default: the index default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/waferscope-bench-search.jsonl"))
    args = ap.parse_args(argv)

    import faiss
    import torch

    from waferscope.data.synthetic import generate
    from waferscope.evaluate.retrieval import ann_speed, synthetic_vectors
    from waferscope.search import DEFAULT_EMBEDDING, WaferIndex

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    name = args.embedding or DEFAULT_EMBEDDING
    print(environment_line(args.threads), flush=True)
    rows = []
    archive = generate(args.embed, seed=7)
    index = WaferIndex(embedding=name, n_jobs=args.threads)
    t0 = time.perf_counter()
    index.build(archive)  # labelled synthetic wafers: includes training the metric head on them
    build_s = time.perf_counter() - t0
    more = generate(args.embed, seed=8)
    t0 = time.perf_counter()
    index.add(more)  # embedding + graph insertion only: the per-wafer cost of a growing archive
    add_s = time.perf_counter() - t0
    rows.append({"part": "embed", "embedding": name, "n": args.embed, "dim": int(index.index_.d),
                 "build_with_fit_wafers_per_s": round(args.embed / build_s, 1),
                 "add_wafers_per_s": round(args.embed / add_s, 1), "environment": environment_line(args.threads)})
    print(json.dumps(rows[-1]), flush=True)
    for n in args.sizes:
        archive_vectors, queries = synthetic_vectors(n, n_base=args.embed, n_jobs=args.threads, embedding=name)
        row = {"part": "graph", "embedding": name, **ann_speed(archive_vectors, queries, k=10),
               "environment": environment_line(args.threads)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
