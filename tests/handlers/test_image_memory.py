"""image-resize's memory bounds, measured: each case runs the handler in a fresh Python
process (a worker's imports and S3 client, the moto server behind it) that reports its
resident-set high-water mark (VmHWM) before and after the task."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image

from tests.conftest import ROOT

MB = 1024 * 1024

CHILD = r"""
import json, logging, sys
from conveyor.aws import AwsBackend
from conveyor.errors import PermanentError
from conveyor.settings import Settings
from worker.handlers.context import Context
from worker.handlers.image import image_resize

def high_water() -> int:
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

bucket, payload, options = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
settings = Settings(bucket=bucket)
backend = AwsBackend(settings)
ctx = Context(
    task_id="T", task_type="image-resize", attempt=1, max_attempts=1, settings=settings,
    logger=logging.LoggerAdapter(logging.getLogger("t"), {}), options=options, blob_factory=backend.blobs,
)
backend.blobs(bucket).exists("warm-up")  # clients built and connected: the baseline
before = high_water()
try:
    outcome = {"result": image_resize(payload, ctx)}
except PermanentError as exc:
    outcome = {"error": str(exc)}
print(json.dumps({**outcome, "before": before, "peak": high_water()}))
"""


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid RGB PNG of black pixels, compressed row by row: 13000x13000 is ~0.5 MB on
    disk and 507 MB decoded, without ever holding the pixels here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # Every block of rows is the same, so it is compressed once: after a full flush the
    # compressor is back in its starting state, and the next identical block would come out
    # byte for byte the same. The zlib wrapper (header, Adler-32 of all rows) is added here.
    rows = 100
    row = b"\0" * (1 + 3 * width)
    block, tail = row * rows, row * (height % rows)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    piece = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    stream = piece * (height // rows) + packer.compress(tail) + packer.flush()
    idat = [b"\x78\xda", stream, struct.pack(">I", zlib.adler32(tail, adler))]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_of_zeros(13000, 13000)


def run(storage, payload: dict, options: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, storage.bucket, json.dumps(payload), json.dumps(options or {})],
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def test_a_pixel_bomb_fails_without_decoding(storage, bomb):
    assert len(bomb) < 700 * 1024
    storage.blobs().put("bomb.png", bomb, "image/png")
    out = run(storage, {"key": "bomb.png", "width": 200, "height": 200})
    assert "13000x13000" in out["error"] and "decompression-bomb" in out["error"]
    assert out["peak"] - out["before"] < 16 * MB, out


def test_a_pixel_bomb_under_pillows_limit_is_held_by_the_pixel_cap(storage):
    big = png_of_zeros(7000, 7000)  # 49 M pixels: below Pillow's warning, 147 MB decoded
    storage.blobs().put("big.png", big, "image/png")
    out = run(storage, {"key": "big.png", "width": 200, "height": 200})
    assert "options.maxInputPixels" in out["error"], out
    assert out["peak"] - out["before"] < 16 * MB, out


def test_a_tiny_file_cannot_ask_for_a_huge_output(storage):
    tiny = io.BytesIO()
    Image.new("RGB", (2, 2)).save(tiny, format="PNG")
    assert len(tiny.getvalue()) < 100
    storage.blobs().put("tiny.png", tiny.getvalue(), "image/png")
    payload = {"key": "tiny.png", "width": 10000, "height": 10000, "upscale": True}
    out = run(storage, payload)
    assert "options.allowUpscale" in out["error"]
    out = run(storage, payload, {"allowUpscale": True})
    assert "options.maxOutputPixels" in out["error"], out
    assert out["peak"] - out["before"] < 16 * MB, out


def test_the_largest_allowed_image_stays_within_its_bound(storage):
    """The worst case the defaults allow: 25 M pixels in, 16.7 M pixels (4096x4096) out."""
    storage.blobs().put("photo.png", png_of_zeros(5000, 5000), "image/png")
    out = run(storage, {"key": "photo.png", "width": 4096, "height": 4096, "output_key": "big.webp"})
    assert out["result"]["width"] == 4096, out
    # 100 MB decoded (4 bytes a pixel) + 67 MB resized + the encoder's buffers.
    assert out["peak"] - out["before"] < 300 * MB, out
