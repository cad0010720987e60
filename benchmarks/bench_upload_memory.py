"""Memory of `cpcl serve` under a burst of uploads that are small files declaring large images.

    PYTHONPATH=src:tests python benchmarks/bench_upload_memory.py              # 64 x PNG 5000 x 5000
    PYTHONPATH=src:tests python benchmarks/bench_upload_memory.py --format JPEG --uploads 32

Builds a 12-image index with the tests' tiny CLIP (tests/search_support.py), starts `cpcl serve` on a
free loopback port in a process of its own, posts `--uploads` query-by-example requests at once, each
a flat-colour image of `--size` pixels (a PNG of 5000 x 5000 is about 80 KB and decodes to 100 MB),
and prints the server's resident memory before, its peak (VmHWM), and after the burst, with the
statuses and the wall time. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from cpcl.cli import main
from search_support import write_checkpoint, write_gallery


def memory_mb(pid: int, key: str) -> int:
    """VmRSS / VmHWM of process `pid`, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) // 1024
    raise KeyError(key)


def start_server(base: Path) -> tuple[subprocess.Popen, str]:
    """`cpcl serve` over a tiny index in `base`; (process, base URL) once it answers."""
    write_gallery(base / "imgs")
    checkpoint = write_checkpoint(base / "tiny.pt")
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--images", str(base / "imgs"),
                 "--out", str(base / "idx"), "--workers", "0", "--device", "cpu", "--precision", "fp32"]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "cpcl", "-q", "serve", "--index", str(base / "idx"),
                               "--port", str(port), "--device", "cpu", "--precision", "fp32"],
                              stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/api/info")
            return server, url
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("cpcl serve did not start")


async def burst(url: str, payload: bytes, kind: str, uploads: int) -> list[int]:
    async with httpx.AsyncClient(timeout=600) as client:
        files = {"image": (f"q.{kind.lower()}", payload, f"image/{kind.lower()}")}
        responses = await asyncio.gather(*[client.post(url + "/api/search/image", files=files)
                                           for _ in range(uploads)])
    return [response.status_code for response in responses]


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=64, help="requests sent at once")
    parser.add_argument("--size", type=int, nargs=2, default=(5000, 5000), metavar=("W", "H"))
    parser.add_argument("--format", default="PNG", choices=["PNG", "JPEG"])
    args = parser.parse_args()
    buffer = io.BytesIO()
    Image.new("RGB", tuple(args.size), (120, 80, 40)).save(buffer, format=args.format)
    payload = buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp))
        try:
            before = memory_mb(server.pid, "VmRSS")
            start = time.perf_counter()
            statuses = asyncio.run(burst(url, payload, args.format, args.uploads))
            seconds = time.perf_counter() - start
            peak, after = memory_mb(server.pid, "VmHWM"), memory_mb(server.pid, "VmRSS")
        finally:
            server.terminate()
            server.wait()
    print(f"| uploads | file | statuses | seconds | RSS before MB | peak RSS MB | RSS after MB |\n"
          f"|---|---|---|---|---|---|---|\n"
          f"| {args.uploads} | {args.format} {args.size[0]}x{args.size[1]}, {len(payload) // 1024} KB | "
          f"{', '.join(map(str, sorted(set(statuses))))} | {seconds:.1f} | {before} | {peak} | {after} |")


if __name__ == "__main__":
    main_bench()
