"""image-resize: generated images on moto S3, resized by Pillow, read back and checked."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from conveyor.errors import PermanentError
from worker.handlers.image import image_resize


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB", **save: object) -> bytes:
    image = Image.new(mode, size, (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30))
    image.paste((20, 20, 220) if mode == "RGB" else (20, 20, 220, 255), (0, 0, size[0] // 2, size[1]))
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_fits_in_the_box_keeping_aspect_ratio(make_ctx, storage):
    blobs = storage.blobs()
    blobs.put("in/wide.png", encoded((800, 400), "PNG"), "image/png")
    result = image_resize({"key": "in/wide.png", "width": 200, "height": 200}, make_ctx())

    assert result["key"] == "in/wide-200x200.png" and result["bucket"] == storage.bucket
    assert (result["width"], result["height"]) == (200, 100)
    assert result["source"] == {"bucket": storage.bucket, "key": "in/wide.png", "width": 800, "height": 400}
    stored = blobs.get(result["key"])
    assert result["bytes"] == len(stored) and result["content_type"] == "image/png"
    image = opened(stored)
    assert image.format == "PNG" and image.size == (200, 100)
    # The left half was blue, the right half red: resizing kept the picture, not just the size.
    assert image.getpixel((20, 50))[2] > 200 and image.getpixel((180, 50))[0] > 180


def test_output_format_follows_the_output_key(make_ctx, storage):
    storage.blobs().put("in/a.png", encoded((300, 600), "PNG", "RGBA"), "image/png")
    result = image_resize(
        {"key": "in/a.png", "width": 100, "height": 100, "output_key": "out/a.jpg", "quality": 70},
        make_ctx(),
    )
    image = opened(storage.blobs().get("out/a.jpg"))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (50, 100))
    assert (result["format"], result["content_type"]) == ("JPEG", "image/jpeg")

    result = image_resize(
        {"key": "in/a.png", "width": 60, "height": 60, "output_key": "out/a.webp"}, make_ctx()
    )
    assert opened(storage.blobs().get("out/a.webp")).format == "WEBP" and result["width"] == 30


def test_key_without_extension_keeps_the_source_format(make_ctx, storage):
    storage.blobs().put("raw/photo", encoded((400, 300), "JPEG"), "image/jpeg")
    result = image_resize({"key": "raw/photo", "width": 40, "height": 40}, make_ctx())
    assert result["key"] == "raw/photo-40x40" and result["format"] == "JPEG"
    assert opened(storage.blobs().get("raw/photo-40x40")).size == (40, 30)


def test_small_images_are_not_enlarged_unless_asked_and_allowed(make_ctx, storage):
    storage.blobs().put("s.png", encoded((50, 25), "PNG"), "image/png")
    assert image_resize({"key": "s.png", "width": 400, "height": 400}, make_ctx())["width"] == 50
    payload = {"key": "s.png", "width": 400, "height": 400, "upscale": True, "output_key": "big.png"}
    with pytest.raises(PermanentError, match=r"options\.allowUpscale"):
        image_resize(payload, make_ctx())
    with pytest.raises(PermanentError, match=r"options\.allowUpscale"):
        image_resize(payload, make_ctx({"allowUpscale": "true"}))
    result = image_resize(payload, make_ctx({"allowUpscale": True}))
    assert (result["width"], result["height"]) == (400, 200)


def test_exif_orientation_is_applied(make_ctx, storage):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    storage.blobs().put("cam.jpg", encoded((400, 200), "JPEG", exif=exif.tobytes()), "image/jpeg")
    result = image_resize({"key": "cam.jpg", "width": 100, "height": 100}, make_ctx())
    assert (result["width"], result["height"]) == (50, 100)  # shown portrait, as the camera meant


def test_writes_to_another_allowed_bucket(make_ctx, storage):
    other = storage.new_bucket()
    storage.blobs().put("p.png", encoded((100, 100), "PNG"), "image/png")
    ctx = make_ctx({"buckets": [other]})
    result = image_resize({"key": "p.png", "width": 10, "height": 10, "output_bucket": other}, ctx)
    assert result["bucket"] == other and storage.blobs(other).exists("p-10x10.png")
    assert not storage.blobs().exists("p-10x10.png")


@pytest.mark.parametrize(
    ("stored", "payload", "message"),
    [
        (None, {"key": "missing.png"}, "no object"),
        (b"not an image at all", {"key": "x.png"}, "not an image"),
        ("truncated", {"key": "x.png"}, "cannot decode"),
        ("png", {"key": "x.png", "output_key": "x.psd"}, "cannot write PSD"),
        ("png", {"key": "x.png", "output_key": "x.png"}, "overwrite"),
        ("png", {"key": "x.png", "output_bucket": "not-allowed"}, "options.buckets"),
        ("png", {"key": "x.png", "bucket": "not-allowed"}, "options.buckets"),
        ("png", {"key": "x.png", "bucket": "no-such-bucket-here"}, "no object"),
        ("png", {"key": "x.png", "output_bucket": "no-such-bucket-here"}, "no bucket"),
    ],
)
def test_bad_input_fails_permanently(make_ctx, storage, stored, payload, message):
    png = encoded((64, 64), "PNG")
    if stored is not None:
        storage.blobs().put("x.png", {"png": png, "truncated": png[: len(png) // 2]}.get(stored, stored))
    allow = {"buckets": ["no-such-bucket-here"]} if "no-such" in str(payload) else {}
    with pytest.raises(PermanentError, match=message):
        image_resize({"width": 10, "height": 10, **payload}, make_ctx(allow))


def test_decompression_bombs_are_refused(make_ctx, storage, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a bomb is > 2x this
    storage.blobs().put("bomb.png", encoded((100, 100), "PNG"), "image/png")
    with pytest.raises(PermanentError, match="too large"):
        image_resize({"key": "bomb.png", "width": 10, "height": 10}, make_ctx())


def test_pillows_warning_zone_is_refused_too(make_ctx, storage, monkeypatch):
    """Pillow only warns between its limit and twice it; the handler refuses there too,
    even when the TaskType's own pixel cap is higher."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    storage.blobs().put("warn.png", encoded((40, 40), "PNG"), "image/png")  # 1600 pixels
    with pytest.raises(PermanentError, match="decompression-bomb limit"):
        image_resize({"key": "warn.png", "width": 10, "height": 10}, make_ctx({"maxInputPixels": 10**9}))


def test_the_input_pixel_cap_counts_jpeg_draft_scaling(make_ctx, storage):
    storage.blobs().put("p.png", encoded((100, 100), "PNG"), "image/png")
    storage.blobs().put("p.jpg", encoded((800, 800), "JPEG"), "image/jpeg")
    with pytest.raises(PermanentError, match=r"100x100 \(10000 pixels\).*options\.maxInputPixels"):
        image_resize({"key": "p.png", "width": 10, "height": 10}, make_ctx({"maxInputPixels": 5000}))
    # 640000 pixels declared, decoded at 1/8 scale (100x100) for a 100x100 box: allowed.
    result = image_resize({"key": "p.jpg", "width": 100, "height": 100}, make_ctx({"maxInputPixels": 20_000}))
    assert (result["width"], result["height"]) == (100, 100)
    with pytest.raises(PermanentError, match="maxInputPixels"):  # a full-size decode is not
        image_resize({"key": "p.jpg", "width": 700, "height": 700}, make_ctx({"maxInputPixels": 20_000}))


class ReportsSmall:
    """A store whose HEAD under-reports: the object was replaced after it."""

    def __init__(self, inner):
        self.inner = inner

    def stat(self, key):
        info = self.inner.stat(key)
        return type(info)(size=10, metadata=info.metadata)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_byte_cap_is_checked_before_and_while_downloading(make_ctx, storage):
    data = encoded((300, 300), "PNG")
    storage.blobs().put("b.png", data, "image/png")
    with pytest.raises(PermanentError, match=rf"is {len(data)} bytes.*options\.maxInputBytes"):
        image_resize({"key": "b.png", "width": 10, "height": 10}, make_ctx({"maxInputBytes": 100}))
    ctx = make_ctx({"maxInputBytes": 100})
    factory = ctx.blob_factory
    ctx.blob_factory = lambda name: ReportsSmall(factory(name))
    with pytest.raises(PermanentError, match="more than 100 bytes"):
        image_resize({"key": "b.png", "width": 10, "height": 10}, ctx)


def test_only_the_configured_bucket_unless_listed(make_ctx, storage):
    theirs = storage.new_bucket()  # another team's, reachable by the worker's role
    storage.blobs(theirs).put("secret.png", encoded((64, 64), "PNG"), "image/png")
    with pytest.raises(PermanentError, match="not allowed"):
        image_resize({"key": "secret.png", "bucket": theirs, "width": 8, "height": 8}, make_ctx())
    assert not storage.blobs().exists("secret-8x8.png") and not storage.blobs(theirs).exists("secret-8x8.png")


def test_key_prefixes_bound_reads_and_writes(make_ctx, storage):
    storage.blobs().put("uploads/a.png", encoded((64, 64), "PNG"), "image/png")
    storage.blobs().put("private/a.png", encoded((64, 64), "PNG"), "image/png")
    options = {"readPrefixes": ["uploads/"], "writePrefixes": ["thumbs/"]}
    result = image_resize(
        {"key": "uploads/a.png", "width": 8, "height": 8, "output_key": "thumbs/a.png"}, make_ctx(options)
    )
    assert result["key"] == "thumbs/a.png"
    with pytest.raises(PermanentError, match="readPrefixes"):
        image_resize(
            {"key": "private/a.png", "width": 8, "height": 8, "output_key": "thumbs/b.png"}, make_ctx(options)
        )
    with pytest.raises(PermanentError, match="writePrefixes"):
        image_resize(
            {"key": "uploads/a.png", "width": 8, "height": 8}, make_ctx(options)
        )  # uploads/a-8x8.png


def test_an_existing_output_is_not_replaced_unless_allowed(make_ctx, storage):
    blobs = storage.blobs()
    blobs.put("o.png", encoded((64, 64), "PNG"), "image/png")
    blobs.put("keep.png", b"someone else's", "image/png")
    with pytest.raises(PermanentError, match=r"exists.*options\.overwrite"):
        image_resize({"key": "o.png", "width": 8, "height": 8, "output_key": "keep.png"}, make_ctx())
    assert blobs.get("keep.png") == b"someone else's"
    with pytest.raises(PermanentError, match=r"options\.overwrite"):  # the payload alone cannot
        image_resize(
            {"key": "o.png", "width": 8, "height": 8, "output_key": "o.png", "overwrite": True}, make_ctx()
        )
    ctx = make_ctx({"overwrite": True})
    image_resize({"key": "o.png", "width": 8, "height": 8, "output_key": "keep.png"}, ctx)
    assert opened(blobs.get("keep.png")).size == (8, 8)
    again = make_ctx()  # a retry of one task may replace its own earlier output
    image_resize({"key": "o.png", "width": 8, "height": 8, "output_key": "mine.png"}, again)
    image_resize({"key": "o.png", "width": 4, "height": 4, "output_key": "mine.png"}, again)
    assert opened(blobs.get("mine.png")).size == (4, 4)


@pytest.mark.parametrize(
    "options",
    [
        {"maxInputPixels": 0},
        {"maxOutputPixels": "big"},
        {"maxInputBytes": True},
        {"buckets": "all"},
        {"readPrefixes": "uploads/"},
    ],
)
def test_bad_options_fail_naming_the_option(make_ctx, storage, options):
    storage.blobs().put("x.png", encoded((16, 16), "PNG"), "image/png")
    with pytest.raises(PermanentError, match=rf"options\.{next(iter(options))}"):
        image_resize({"key": "x.png", "width": 8, "height": 8}, make_ctx(options))
