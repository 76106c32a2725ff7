"""Load test of `waferscope serve`: a bounded number of requests from concurrent clients on loopback.

    python benchmarks/bench_serve.py                          # starts the server itself: 10,000 requests, 32 clients
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 --requests 2000
    python benchmarks/bench_serve.py --endpoint classify --maps-per-request 8

Each client is an asyncio task with its own keep-alive HTTP/1.1 connection (serveclient.HonestClient,
shared with bench_soak.py: a minimal client on raw asyncio streams), sending one request at a time and
the next as soon as the answer arrives, until ``--requests`` are done; with ``--endpoint both`` requests alternate between /v1/classify and /v1/score. The maps are
seeded synthetic ones (``--seed``), pre-encoded as JSON so the client spends its CPU on HTTP, not
on encoding. Reported: wafers/s and requests/s over the whole run, p50/p99 latency, the error
count (any non-200 or transport error), and the server's resident memory (its /health ``rss_bytes``)
at the start (after a warm-up), the middle and the end: flat memory = no per-request leak.

Note that the load generator runs on the same cores as the server: on a 2-core machine the figures
are those of client + server sharing the CPU.

``--suite`` runs the issue #28 targets in one go against one server: 1-map classify, 64-map classify
and 1-map score (``--requests`` each; 64-map runs use a 16th of them), and, in the same run, what the
command line does with the same models on the same maps (``classify predict`` / ``detect score``'s
model call, ``predict_proba`` / ``score`` on 4,096 maps in a fresh process with the server's torch
threads), so the service/CLI ratio compares like with like on whatever load the machine has.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serveclient import HonestClient, request_bytes  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int | None, workers: int | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "waferscope.cli.main", "serve", "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    if workers:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded 2-core machine can take a minute just to import torch
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("error: the server did not answer /health within 180 s")


def server_cpu(url: str) -> float | None:
    """The server's CPU seconds so far (its /health ``cpu_seconds``; None from a server without it)."""
    return httpx.get(url + "/health", timeout=10).json().get("cpu_seconds")


def rss(url: str) -> int:
    return int(httpx.get(url + "/health", timeout=10).json()["rss_bytes"])


async def run_load(url: str, bodies: list[bytes], endpoints: list[str], n_requests: int, concurrency: int,
                   maps_per_request: int, on_half) -> dict:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    raws = [[request_bytes(parts.netloc, ep, b) for b in bodies] for ep in endpoints]
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n_requests))
    half = n_requests // 2

    async def worker():
        async with HonestClient(host, port, latencies, errors) as client:
            for i in counter:  # a shared iterator: the run is bounded at n_requests in all
                if i == half:
                    await on_half()
                await client.send(raws[i % len(endpoints)][i % len(bodies)])

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"wall_s": wall, "requests": len(lat), "wafers": len(lat) * maps_per_request,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "errors": len(errors), "first_errors": errors[:3]}


CLI_RATE = r"""
import json, sys, time, torch
from waferscope.cli.serve import resolve_models
import waferscope.data as wd
torch.set_num_threads(int(sys.argv[1]))
m = resolve_models(None, None, None, None, None, None)
ds = wd.load("synthetic:n=4096,seed=" + sys.argv[2])
out = {}
for kind, fn in (("classify", m["classifier"].predict_proba), ("score", m["detector"].score)):
    fn(ds.subset(range(256)))  # warm-up
    t, c = time.perf_counter(), time.process_time()
    fn(ds)
    out[kind] = len(ds) / (time.perf_counter() - t)
    # the model's own CPU per wafer in 32-map calls in this process (a busy service's batches; the
    # 4,096-map call above may run in worker processes, whose CPU process_time does not see)
    c = time.process_time()
    for start in range(0, 1024, 32):
        fn(ds.subset(range(start, start + 32)))
    out[kind + "_cpu_ms"] = 1000 * (time.process_time() - c) / 1024
print(json.dumps(out))
"""


def cli_rates(threads: int, seed: int) -> dict:
    """wafers/s of the CLI's model calls (what `classify predict` / `detect score` run after loading)."""
    res = subprocess.run([sys.executable, "-c", CLI_RATE, str(threads), str(seed)], capture_output=True, text=True,
                         timeout=900, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bodies_for(maps_per_request: int, seed: int) -> list[bytes]:
    import waferscope.data as wd

    k = maps_per_request
    ds = wd.load(f"synthetic:n={256 * k},seed={seed}")
    return [json.dumps({"maps": [m.tolist() for m in ds.maps[i:i + k]],
                        "ids": [str(x) for x in ds.ids[i:i + k]]}).encode() for i in range(0, len(ds), k)]


def suite(args) -> int:
    proc, url = (None, args.url.rstrip("/")) if args.url else start_server(args.threads, args.workers)
    rows = []
    try:
        health = httpx.get(url + "/health", timeout=10).json()
        threads = health.get("torch_threads") or 1
        workers = health.get("workers") or 1
        load0 = os.getloadavg()
        # the CLI on every core, as `classify predict` runs (the server's threads are per worker)
        cli = cli_rates(threads * workers, args.seed)
        for endpoint, k in (("classify", 1), ("classify", 64), ("score", 1)):
            bodies = bodies_for(k, args.seed)
            eps = [f"/v1/{endpoint}"]
            n = max(64, args.requests // (16 if k > 1 else 1))
            asyncio.run(run_load(url, bodies, eps, min(n, 200), args.concurrency, k, lambda: asyncio.sleep(0)))
            cpu0, client0 = server_cpu(url), time.process_time()
            res = asyncio.run(run_load(url, bodies, eps, n, args.concurrency, k, lambda: asyncio.sleep(0)))
            client_cpu, cpu1 = time.process_time() - client0, server_cpu(url)
            rate = res["wafers"] / res["wall_s"]
            # CPU per wafer: the server's (all its threads) and the load generator's; the server's minus
            # the model's own (32-map calls, in-process) is the service's overhead, whatever the model
            srv_ms = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / res["wafers"]
            rows.append({"endpoint": endpoint, "maps_per_request": k, "wafers_per_s": rate, "p50_ms": res["p50_ms"],
                         "p99_ms": res["p99_ms"], "errors": res["errors"], "requests": res["requests"],
                         "cli_wafers_per_s": cli[endpoint], "ratio": rate / cli[endpoint],
                         "server_cpu_ms_per_wafer": srv_ms, "cli_cpu_ms_per_wafer": cli[endpoint + "_cpu_ms"],
                         "overhead_cpu_ms_per_wafer": None if srv_ms is None else srv_ms - cli[endpoint + "_cpu_ms"],
                         "client_cpu_ms_per_wafer": 1000 * client_cpu / res["wafers"]})
        rss_end = rss(url)
        pss_end = httpx.get(url + "/health", timeout=10).json().get("pss_bytes")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    out = {"utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "loadavg_start": load0,
           "loadavg_end": os.getloadavg(), "cpus": os.cpu_count(), "concurrency": args.concurrency,
           "classifier": health["classifier"]["name"], "detector": health["detector"]["name"],
           "torch_threads": threads, "workers": workers, "server_rss_mb_end": round(rss_end / 2**20, 1),
           "server_pss_mb_end": None if pss_end is None else round(pss_end / 2**20, 1), "rows": rows}
    print(f"{out['utc']}, load average {load0[0]:.2f} → {out['loadavg_end'][0]:.2f} on {out['cpus']} CPUs, "
          f"{args.concurrency} clients, classifier {out['classifier']}, detector {out['detector']}, {workers} worker "
          f"process(es) of {threads} model thread(s); server memory at the end: RSS {out['server_rss_mb_end']} MB"
          + ("" if pss_end is None else f" summed over its processes, PSS {out['server_pss_mb_end']} MB"))
    print(f"{'endpoint':<10}{'maps/req':>9}{'service w/s':>13}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CLI w/s':>10}"
          f"{'ratio':>7}   CPU ms/wafer: server (model alone, overhead), client")
    for r in rows:
        cpu = "?" if r["server_cpu_ms_per_wafer"] is None else (
            f"{r['server_cpu_ms_per_wafer']:.3f} ({r['cli_cpu_ms_per_wafer']:.3f}, {r['overhead_cpu_ms_per_wafer']:.3f})")
        print(f"{r['endpoint']:<10}{r['maps_per_request']:>9}{r['wafers_per_s']:>13,.0f}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['errors']:>8}{r['cli_wafers_per_s']:>10,.0f}{r['ratio']:>7.2f}"
              f"   {cpu}, {r['client_cpu_ms_per_wafer']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 1 if any(r["errors"] for r in rows) else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start `waferscope serve` on a free loopback port)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--maps-per-request", type=int, default=1)
    ap.add_argument("--endpoint", choices=["classify", "score", "both"], default="both")
    ap.add_argument("--threads", type=int, help="--threads of the server it starts (default: the server's)")
    ap.add_argument("--workers", type=int, help="--workers of the server it starts (default: the server's, one per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--suite", action="store_true", help="the issue #28 targets + the CLI's rates in one run")
    args = ap.parse_args(argv)
    if args.suite:
        return suite(args)

    import waferscope.data as wd

    ds = wd.load(f"synthetic:n={256 * args.maps_per_request},seed={args.seed}")
    k = args.maps_per_request
    bodies = [json.dumps({"maps": [m.tolist() for m in ds.maps[i:i + k]],
                          "ids": [str(x) for x in ds.ids[i:i + k]]}).encode() for i in range(0, len(ds), k)]
    endpoints = {"classify": ["/v1/classify"], "score": ["/v1/score"], "both": ["/v1/classify", "/v1/score"]}[args.endpoint]

    proc = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        proc, url = start_server(args.threads, args.workers)
    try:
        health = httpx.get(url + "/health", timeout=10).json()
        # warm-up: the first calls allocate torch's buffers; memory is measured after them
        asyncio.run(run_load(url, bodies, endpoints, 200, args.concurrency, k, lambda: asyncio.sleep(0)))
        mem = {"start": rss(url)}
        cpu0 = server_cpu(url)

        async def at_half():
            async with httpx.AsyncClient() as client:
                mem["middle"] = int((await client.get(url + "/health")).json()["rss_bytes"])

        res = asyncio.run(run_load(url, bodies, endpoints, args.requests, args.concurrency, k, at_half))
        mem["end"] = rss(url)
        cpu1 = server_cpu(url)
        res["server_cpu_ms_per_wafer"] = None if cpu0 is None or cpu1 is None else 1000 * (cpu1 - cpu0) / res["wafers"]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    res.update(rss_mb={k_: round(v / 2**20, 1) for k_, v in mem.items()}, endpoint=args.endpoint,
               concurrency=args.concurrency, maps_per_request=k,
               classifier=health["classifier"]["name"], detector=health["detector"]["name"],
               torch_threads=health.get("torch_threads"),
               utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), loadavg=os.getloadavg())
    print(f"{res['requests']} requests ({args.endpoint}, {k} map(s) each) from {args.concurrency} clients "
          f"in {res['wall_s']:.1f} s: {res['wafers'] / res['wall_s']:,.0f} wafers/s "
          f"({res['requests'] / res['wall_s']:,.0f} requests/s); latency p50 {res['p50_ms']:.1f} ms, "
          f"p99 {res['p99_ms']:.1f} ms; errors {res['errors']}; server RSS start/middle/end "
          f"{res['rss_mb']['start']} / {res['rss_mb'].get('middle', '?')} / {res['rss_mb']['end']} MB "
          f"(classifier {res['classifier']}, detector {res['detector']}, {res['torch_threads']} torch threads); "
          f"server CPU {res['server_cpu_ms_per_wafer'] or float('nan'):.3f} ms/wafer; load average "
          f"{res['loadavg'][0]:.2f}")
    if res["errors"]:
        print("first errors:", *res["first_errors"], sep="\n  ")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
