"""Load benchmark of ``adcore serve``: bounded request count and time, loopback only.

Fits a PatchCore model with ``adcore run`` (the built-in synthetic data, or
``--data`` such as ../shared/data/mvtec3d_tire), serves it on a free loopback
port, sends ``--requests`` PNG images from ``--clients`` concurrent clients and
prints throughput, p50/p99 latency, errors and the server's resident memory
before the load and after each tenth of it: memory is flat when the last
tenths stay where the first ones got to (a one-off working set, no leak).
Timings on a shared machine are noisy.

    python benchmarks/bench_serve.py --data ../shared/data/mvtec3d_tire --category tire
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ADCORE = [sys.executable, "-c", "from adcore.cli.main import cli; cli()"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, body: bytes) -> tuple[int, float]:
    """Status and client-side latency (s) of one POST /predict."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, time.perf_counter() - start


def test_images(data: Path | None, category: str) -> list[Path]:
    """The test images of the category the model was fitted on (the synthetic default set without --data)."""
    from adcore.data import synthetic
    from adcore.data.folder import open_folder

    root = data if data is not None else synthetic.default_root()
    found = [c for c in open_folder(root) if c.name == category]
    if not found or not found[0].test:
        raise SystemExit(f"no test images of {category} under {root}")
    return [sample.path for sample in found[0].test]


def start_server(model: Path, engine: str) -> tuple[subprocess.Popen[str], str]:
    """An adcore serve process on a free loopback port, ready (model loaded and warmed up)."""
    process = subprocess.Popen([*ADCORE, "serve", str(model), "--port", "0", "--engine", engine],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    url = None
    for line in process.stdout:
        print(f"  server: {line.rstrip()}")
        found = re.search(r"adcore serve: (http://\S+/)", line)
        if found:
            url = found.group(1)
        if line.startswith("Model ready"):
            break
    if url is None or process.poll() is not None:
        raise SystemExit("the server did not start")
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--category", default=None)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long")
    args = parser.parse_args()
    if args.data is None and args.category is None:
        args.category = "machined_part"  # one category of the synthetic set is enough to serve

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        out = Path(scratch) / "results"
        command = [*ADCORE, "run", "--detector", "patchcore", "--image-size", str(args.image_size), "--out", str(out)]
        if args.data is not None:
            command += ["--data", str(args.data)]
        if args.category is not None:
            command += ["--category", args.category]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"fitted in {time.perf_counter() - started:.0f} s")
        category = next(c for c in sorted((out / "patchcore").iterdir()) if (c / "model").is_dir())
        model = category / "model"
        if args.engine == "onnx":
            subprocess.run([*ADCORE, "export", str(model), "--out", str(Path(scratch) / "onnx")], check=True)
            model = Path(scratch) / "onnx"
        images = test_images(args.data, category.name)
        bodies = [p.read_bytes() for p in images]
        process, url = start_server(model, args.engine)
        try:
            before = rss_mb(process.pid)
            deadline = time.monotonic() + args.max_seconds

            tenths: list[tuple[int, float]] = []
            done = [0]
            count_lock = threading.Lock()

            def one(i: int) -> tuple[int, float]:
                if time.monotonic() > deadline:
                    return -1, 0.0
                answer = post(url + "predict", bodies[i % len(bodies)])
                with count_lock:
                    done[0] += 1
                    if done[0] % max(1, args.requests // 10) == 0:
                        tenths.append((done[0], rss_mb(process.pid)))
                return answer

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - started
            after = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(60)
    sent = [(s, t) for s, t in results if s != -1]
    latencies = np.array([t for s, t in sent if s == 200]) * 1000
    errors = sum(1 for s, _ in sent if s != 200)
    print(f"engine {args.engine}, {args.image_size} px, {len(images)} distinct test images ({category.name}), "
          f"{args.clients} concurrent clients")
    print(f"requests {len(sent)} in {wall:.1f} s: {len(sent) / wall:.2f} req/s; errors {errors}; "
          f"not sent (time bound) {len(results) - len(sent)}")
    if len(latencies):
        print(f"latency p50 {np.percentile(latencies, 50):.0f} ms, p99 {np.percentile(latencies, 99):.0f} ms, "
              f"max {latencies.max():.0f} ms")
    print(f"server RSS before {before:.0f} MB, after {after:.0f} MB")
    print("server RSS after n requests: " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in tenths))
    if len(tenths) >= 4:
        half = len(tenths) // 2
        print(f"growth over the second half of the load: {tenths[-1][1] - tenths[half][1]:+.0f} MB")


if __name__ == "__main__":
    main()
