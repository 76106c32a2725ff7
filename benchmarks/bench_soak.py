"""Soak / fault benchmark of `waferscope serve`: N minutes of honest and hostile traffic on loopback.

    python benchmarks/bench_soak.py                      # 10 minutes, 8 honest clients, then 60 s quiet
    python benchmarks/bench_soak.py --minutes 2 --settle 60 --out soak   # soak.json + soak.png

It starts `waferscope serve` on a free 127.0.0.1 port (traffic never leaves loopback), then for
``--minutes``:

- ``--clients`` honest clients each send 1-map classify/score requests back to back (every 16th
  request carries 64 maps), on keep-alive connections, and count every non-200 answer as an error;
- one attacker cycles through the issue #28 cases: a 5 kB Parquet stating 80 maps of 5000×5000, a 2 MB
  npz bomb, an .npy header stating 100,000 maps, an id holding a lone surrogate, JSON nested 20,000
  deep, ``?maps=1`` over the echo limit, a legal 1,024-map ``?maps=1`` request and a 64-map
  ``?heatmap=1`` request, a cross-origin upload, 1 MB of headers, 50 idle and 20 half-sent
  connections (held until the server closes them); each hostile answer's status and time are kept.

The server's RSS (``/proc/PID/status``, summed over its worker processes, sampled every 2 s, not
through the server) is recorded during
the load and for ``--settle`` seconds after it; the report gives the honest clients' errors (goal 0)
and p50/p99, each attack's worst answer time, and RSS idle / peak / end of load / after settling
(goal: back within 20 % of idle), and writes ``OUT.json`` and ``OUT.png`` (RSS over time).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import random
import statistics
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import bodies_for, start_server  # noqa: E402
from serveclient import HonestClient, request_bytes  # noqa: E402

MB = 1 << 20


def server_rss(pid: int) -> int:
    """The RSS of the server process and its children (``--workers`` > 1: the supervisor and its workers,
    pages they share counted in each)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    total = 0
    for p in [pid, *map(int, children)]:
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:  # a worker that just exited (and is being replaced)
            pass
    return total


# ---- hostile payloads ---------------------------------------------------------------------------------
def huge_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, side = 80, 5000
    one = pa.array([b"\x01" * (side * side)], type=pa.binary())
    table = pa.table({"id": [f"w{i}" for i in range(n)], "label": [""] * n,
                      "rows": pa.array([side] * n, pa.int32()), "cols": pa.array([side] * n, pa.int32()),
                      "channels": pa.array([1] * n, pa.int8()),
                      "map": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), one)})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue().to_pybytes()


def npz_bomb(inflated: int = 2048 * MB) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for key, arr in (("shapes", np.array([(8, 8)] * 4, np.int64)), ("labels", np.array(["none"] * 4))):
            b = io.BytesIO()
            np.lib.format.write_array(b, arr)
            z.writestr(f"{key}.npy", b.getvalue())
        with z.open("maps_flat.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (inflated,)})
            zero = bytes(16 * MB)
            for _ in range(inflated // len(zero)):
                f.write(zero)
    return out.getvalue()


def npy_claim() -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "|u1", "fortran_order": False, "shape": (100_000, 52, 52)})
    return b.getvalue() + bytes(64)


def attacks(maps_small, big_legal: bytes) -> list[tuple[str, dict]]:
    one = json.dumps({"maps": [maps_small[0].tolist()], "ids": ["x"]})
    over_echo = json.dumps({"maps": [np.ones((200, 200), int).tolist()] * 120}).encode()  # 4.8 M cells echoed
    return [
        ("parquet 80×5000²", {"files": {"file": ("huge.parquet", huge_parquet())}}),
        ("npz bomb", {"files": {"file": ("bomb.npz", npz_bomb())}}),
        ("npy header 100k maps", {"files": {"file": ("stack.npy", npy_claim())}}),
        ("lone surrogate id", {"content": one.replace('"x"', '"\\ud800"').encode()}),
        ("JSON nested 20,000 deep", {"content": b'{"maps": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"}),
        ("?maps=1 over the echo limit", {"content": over_echo, "query": "?maps=1"}),
        ("cross-origin upload", {"files": {"file": ("a.npy", npy_claim())}, "headers": {"Origin": "http://evil.example"}}),
        ("legal 1,024 maps ?maps=1", {"content": big_legal, "query": "?maps=1", "legal": True}),
        ("legal 64 maps ?heatmap=1", {"content": json.dumps({"maps": [m.tolist() for m in maps_small[:64]]}).encode(),
                                      "query": "?heatmap=1", "legal": True}),
    ]


async def raw_attacks(host: str, port: int) -> dict:
    """Idle and half-sent connections and 1 MB of headers: how long until the server closes each."""
    async def closed_after(writer_data: bytes | None, reader, writer) -> float:
        t0 = time.perf_counter()
        if writer_data:
            try:
                writer.write(writer_data)
                await writer.drain()
            except (ConnectionError, OSError):
                return time.perf_counter() - t0
        try:
            while await asyncio.wait_for(reader.read(65536), 60):
                pass
        except asyncio.TimeoutError:
            return float("inf")  # still open after a minute
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
        return time.perf_counter() - t0

    conns = [await asyncio.open_connection(host, port) for _ in range(70)]
    tasks = [closed_after(None if i < 50 else b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Len", *c)
             for i, c in enumerate(conns)]
    r, w = await asyncio.open_connection(host, port)
    tasks.append(closed_after(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MB + b"\r\n\r\n", r, w))
    times = await asyncio.gather(*tasks)
    return {"idle (50)": max(times[:50]), "half-sent headers (20)": max(times[50:70]), "1 MB header": times[70]}


# ---- the run ------------------------------------------------------------------------------------------
async def warm_every_worker(url: str, path: str, body: bytes) -> None:
    """POST ``body`` to ``path`` on fresh connections until every worker process has answered it once."""
    workers = httpx.get(url + "/health", timeout=30).json().get("workers", 1)
    warmed: set = set()
    for _ in range(16 * workers):
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            r = await c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text[:300]
            warmed.add((await c.get("/health")).json().get("pid"))
        if len(warmed) >= workers:
            return


async def soak(url: str, pid: int, args) -> dict:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    small, big64 = bodies_for(1, args.seed), bodies_for(64, args.seed)
    import waferscope.data as wd

    ds = wd.load(f"synthetic:n=1024,seed={args.seed}")
    big_legal = json.dumps({"maps": [m.tolist() for m in ds.maps]}).encode()
    hostile = attacks(ds.maps, big_legal)
    # "idle" = the service after it has answered each kind of legal request once (lazy imports, torch's
    # buffers and one-off caches are then in place), 5 s later; the cold RSS is reported beside it
    # (with several worker processes, in each of them: fresh connections until every worker has answered)
    rss_cold = server_rss(pid)
    for ep in ("/v1/classify", "/v1/score"):
        for body, q in ((small[0], ""), (big64[0], ""), (big64[0], "?heatmap=1"), (big_legal, "?maps=1")):
            await warm_every_worker(url, ep + q, body)
    await asyncio.sleep(5)
    rss_idle = server_rss(pid)
    t_start = time.monotonic()
    t_end = t_start + 60 * args.minutes
    rss_samples: list[tuple[float, int]] = []
    honest_lat: list[float] = []
    honest_err: list[str] = []
    attack_log: dict = defaultdict(list)

    async def sample_rss(until: float):
        while time.monotonic() < until:
            rss_samples.append((time.monotonic() - t_start, server_rss(pid)))
            await asyncio.sleep(2)

    async def honest(k: int):
        rng = random.Random(k)
        i = 0
        async with HonestClient(host, port, honest_lat, honest_err) as client:
            while time.monotonic() < t_end:
                i += 1
                ep = "/v1/classify" if rng.random() < 0.5 else "/v1/score"
                body = big64[i % len(big64)] if i % 16 == 0 else small[i % len(small)]
                await client.send(request_bytes(f"{host}:{port}", ep, body))

    async def attacker():
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            cycle = 0
            while time.monotonic() < t_end:
                for name, spec in hostile:
                    if time.monotonic() >= t_end:
                        break
                    t0 = time.perf_counter()
                    try:
                        kw = {"headers": dict(spec.get("headers", {}))}
                        if "files" in spec:
                            kw["files"] = spec["files"]
                        else:
                            kw["content"] = spec["content"]
                            kw["headers"]["content-type"] = "application/json"
                        r = await c.post("/v1/classify" + spec.get("query", ""), **kw)
                        status, is_json = r.status_code, r.headers.get("content-type", "").startswith("application/json")
                        await r.aread()
                    except httpx.HTTPError as exc:
                        status, is_json = repr(exc)[:80], False
                    attack_log[name].append((status, is_json, time.perf_counter() - t0))
                    await asyncio.sleep(0.5)
                if cycle % 3 == 0:
                    for name, took in (await raw_attacks(host, port)).items():
                        attack_log[name].append(("closed", True, took))
                cycle += 1

    await asyncio.gather(sample_rss(t_end), attacker(), *[honest(k) for k in range(args.clients)])
    rss_end_load = server_rss(pid)
    await sample_rss(time.monotonic() + args.settle)
    rss_after = server_rss(pid)
    lat = sorted(honest_lat)
    return {
        "honest": {"requests": len(lat), "errors": len(honest_err), "first_errors": honest_err[:5],
                   "p50_ms": 1000 * statistics.median(lat) if lat else None,
                   "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None},
        "attacks": {name: {"n": len(v), "statuses": sorted({str(s) for s, _, _ in v}),
                           "all_json": all(j for _, j, _ in v), "max_s": max(t for _, _, t in v)}
                    for name, v in attack_log.items()},
        "rss_mb": {"cold": rss_cold / MB, "idle": rss_idle / MB, "peak": max(r for _, r in rss_samples) / MB, "end_of_load": rss_end_load / MB,
                   "after_settle": rss_after / MB},
        "rss_series": [(round(t, 1), round(r / MB, 1)) for t, r in rss_samples],
        "load_s": 60 * args.minutes,
    }


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, r = zip(*res["rss_series"]) if res["rss_series"] else ((), ())
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t, r, lw=1.5, label="server RSS")
    ax.axvline(res["load_s"], color="grey", ls="--", lw=1, label="load ends")
    ax.axhline(res["rss_mb"]["idle"], color="green", ls=":", lw=1, label="idle")
    ax.axhline(1.2 * res["rss_mb"]["idle"], color="orange", ls=":", lw=1, label="idle + 20 %")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB")
    h = res["honest"]
    ax.set_title(f"waferscope serve soak: {h['requests']:,} honest requests, {h['errors']} errors, "
                 f"p99 {h['p99_ms']:.0f} ms", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the mixed load")
    ap.add_argument("--settle", type=float, default=60.0, help="seconds of quiet after the load (RSS keeps being sampled)")
    ap.add_argument("--clients", type=int, default=8, help="honest clients")
    ap.add_argument("--threads", type=int, help="--threads of the server")
    ap.add_argument("--workers", type=int, help="--workers of the server (default: the server's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="soak", help="writes OUT.json and OUT.png")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.minutes > 120:
        raise SystemExit("error: --minutes must be in (0, 120]")

    proc, url = start_server(args.threads, args.workers)
    try:
        time.sleep(2)  # let the server settle before the idle RSS is read
        load0 = os.getloadavg()
        res = asyncio.run(soak(url, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res.update(utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), loadavg_start=load0,
               loadavg_end=os.getloadavg(), minutes=args.minutes, clients=args.clients)
    out = Path(args.out)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, out.with_suffix(".json"))
    plot(res, out.with_suffix(".png"))
    h, m = res["honest"], res["rss_mb"]
    print(f"{res['utc']}: {args.minutes:g} min, {args.clients} honest clients + 1 attacker, load average "
          f"{load0[0]:.1f} → {res['loadavg_end'][0]:.1f}")
    print(f"honest: {h['requests']:,} requests, {h['errors']} errors, p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms")
    for name, a in res["attacks"].items():
        print(f"  {name:<30} ×{a['n']:<4} answers {','.join(a['statuses']):<12} JSON {a['all_json']!s:<5} worst {a['max_s']:.2f} s")
    back = m["after_settle"] <= 1.2 * m["idle"]
    print(f"server RSS MB: cold {m['cold']:.0f}, idle after warm-up {m['idle']:.0f}, peak {m['peak']:.0f}, end of load {m['end_of_load']:.0f}, "
          f"after {args.settle:g} s quiet {m['after_settle']:.0f} ({'within' if back else 'NOT within'} 20 % of idle)")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0 if h["errors"] == 0 and back else 1


if __name__ == "__main__":
    sys.exit(main())
