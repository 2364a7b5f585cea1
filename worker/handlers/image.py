"""``image-resize``: read an image from S3, fit it in a box keeping its aspect ratio,
write it back to S3.

The output format follows the output key's extension (``.png``, ``.jpg``, ``.webp``...),
or the source's format when the key has none Pillow can write. EXIF orientation is
applied, so a portrait photo stays portrait. Images are only shrunk unless the TaskType
allows enlarging (``options.allowUpscale``) and the payload asks for ``upscale``.

Memory is bounded before anything is decoded, whatever the file claims: the object's size
(HEAD, then a ranged GET) against ``options.maxInputBytes``, the pixels its header declares
against ``options.maxInputPixels`` (after JPEG draft scaling) and against Pillow's own
decompression-bomb threshold (an image Pillow would only warn about is refused too), and
the output's pixels against ``options.maxOutputPixels``. The image is scaled down before
the EXIF rotation copies it, and at most ``CONVEYOR_IMAGE_CONCURRENCY`` images are decoded
at once per worker process.
"""

from __future__ import annotations

import io
import os
import posixpath
import threading
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from conveyor.errors import NotFound, PermanentError
from worker.handlers import handler
from worker.handlers.context import Context
from worker.handlers.storage import bucket, check_key, positive_int_option, write_new

# Formats that cannot store an alpha channel: transparent pixels are flattened onto white.
_NO_ALPHA = {"JPEG", "BMP"}
_QUALITY = {"JPEG", "WEBP"}
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90°
_ORIENTATION = 0x0112

DEFAULT_MAX_INPUT_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_INPUT_PIXELS = 25_000_000
DEFAULT_MAX_OUTPUT_PIXELS = 16_777_216  # 4096 x 4096
# Decoding is what costs memory (4 bytes a pixel, and a copy while resizing): a few at a
# time per process, whatever the worker's concurrency.
_DECODE_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("CONVEYOR_IMAGE_CONCURRENCY", "2"))))


def format_for(key: str) -> str | None:
    """The image format a key's extension names (None: no image extension)."""
    ext = posixpath.splitext(key)[1].lower()
    fmt = Image.registered_extensions().get(ext) if ext else None
    if fmt is not None and fmt not in Image.SAVE:
        raise PermanentError(f"output_key: Pillow cannot write {fmt} ({ext}); use .png, .jpg or .webp")
    return fmt


def default_output_key(key: str, width: int, height: int) -> str:
    stem, ext = posixpath.splitext(key)
    return f"{stem}-{width}x{height}{ext}"


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "L", "CMYK"):
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def fitted(size: tuple[int, int], box: tuple[int, int], upscale: bool) -> tuple[int, int]:
    """``size`` scaled to fit in ``box``, aspect ratio kept; never enlarged unless ``upscale``."""
    ratio = min(box[0] / size[0], box[1] / size[1])
    if not upscale:
        ratio = min(ratio, 1.0)
    return max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio))


def resize(
    data: bytes,
    width: int,
    height: int,
    fmt: str | None,
    upscale: bool,
    quality: int,
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
) -> tuple[bytes, str, tuple[int, int], tuple[int, int]]:
    """Returns (encoded image, format, new size, source size)."""
    try:
        with _DECODE_SLOTS, Image.open(io.BytesIO(data)) as source:
            source_size = source.size
            declared = source_size[0] * source_size[1]
            if Image.MAX_IMAGE_PIXELS is not None and declared > Image.MAX_IMAGE_PIXELS:
                # Pillow only warns (DecompressionBombWarning) up to twice its limit: refuse.
                raise PermanentError(
                    f"key: image too large to decode safely: {source_size[0]}x{source_size[1]} "
                    f"is over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels"
                )
            out_format = fmt or source.format
            if out_format not in Image.SAVE:
                raise PermanentError(
                    f"output_key: Pillow cannot write {out_format or 'this'} images; use .png, .jpg or .webp"
                )
            too_many = PermanentError(
                f"key: the image is {source_size[0]}x{source_size[1]} ({declared} pixels), over this "
                f"TaskType's {max_input_pixels} (options.maxInputPixels)"
            )
            if source.format != "JPEG" and declared > max_input_pixels:
                raise too_many  # before getexif(), which decodes a whole PNG to find its EXIF
            # Work in the stored orientation; the EXIF rotation is applied to the small result.
            turned = source.getexif().get(_ORIENTATION) in _SWAPS_AXES
            box = (height, width) if turned else (width, height)
            target = fitted(source_size, box, upscale)
            if target[0] * target[1] > max_output_pixels:
                raise PermanentError(
                    f"width, height: the output would be {target[0]}x{target[1]}, over this TaskType's "
                    f"{max_output_pixels} pixels (options.maxOutputPixels)"
                )
            if source.format == "JPEG":
                source.draft(source.mode, target)  # decode at 1/2, 1/4 or 1/8 scale when enough
            if source.size[0] * source.size[1] > max_input_pixels:
                raise too_many
            image = source.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            image.info = dict(source.info)
            image.getexif().update(source.getexif())
            image = ImageOps.exif_transpose(image)
            if out_format in _NO_ALPHA:
                image = _flatten(image)
            elif out_format == "GIF" and image.mode not in ("P", "L"):
                image = image.convert("P", palette=Image.Palette.ADAPTIVE)
            options: dict[str, Any] = {"quality": quality} if out_format in _QUALITY else {}
            out = io.BytesIO()
            image.save(out, format=out_format, **options)
            return out.getvalue(), out_format, image.size, source_size
    except PermanentError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentError(f"key: image too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise PermanentError("key: the object is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise PermanentError(f"key: cannot decode the image: {exc}") from exc


def _read_capped(ctx: Context, store: Any, where: str, key: str) -> bytes:
    limit = positive_int_option(ctx, "maxInputBytes", DEFAULT_MAX_INPUT_BYTES)

    def too_big(size: str) -> PermanentError:
        return PermanentError(
            f"key: {where} is {size} bytes, over this TaskType's {limit} (options.maxInputBytes)"
        )

    info = store.stat(key)  # HEAD: refuse a large object before downloading any of it
    if info is None:
        raise PermanentError(f"key: no object {where}")
    if info.size > limit:
        raise too_big(str(info.size))
    try:
        data: bytes = store.get(key, max_bytes=limit)  # replaced since the HEAD: still capped
    except NotFound as exc:
        raise PermanentError(f"key: no object {where}") from exc
    if len(data) > limit:
        raise too_big(f"more than {limit}")
    return data


@handler("image-resize")
def image_resize(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    key = check_key(ctx, str(payload["key"]), "key", "read")
    width, height = int(payload["width"]), int(payload["height"])
    if width < 1 or height < 1:
        raise PermanentError("width, height: must be at least 1")
    upscale = bool(payload.get("upscale", False))
    if upscale and ctx.options.get("allowUpscale") is not True:
        raise PermanentError("upscale: this TaskType does not allow enlarging images (options.allowUpscale)")
    max_input_pixels = positive_int_option(ctx, "maxInputPixels", DEFAULT_MAX_INPUT_PIXELS)
    max_output_pixels = positive_int_option(ctx, "maxOutputPixels", DEFAULT_MAX_OUTPUT_PIXELS)
    source_bucket, source = bucket(ctx, payload.get("bucket"))
    target_bucket, target = bucket(ctx, payload.get("output_bucket") or source_bucket, "output_bucket")
    out_key = check_key(
        ctx, str(payload.get("output_key") or default_output_key(key, width, height)), "output_key", "write"
    )
    if out_key == key and target_bucket == source_bucket and not payload.get("overwrite"):
        raise PermanentError("output_key: equals key; set overwrite: true to replace the source")
    out_format = format_for(out_key)

    ctx.progress(0.0, "reading the source image")
    data = _read_capped(ctx, source, f"s3://{source_bucket}/{key}", key)
    ctx.raise_if_cancelled()
    ctx.progress(0.3, f"read {len(data)} bytes; resizing")
    encoded, fmt, size, source_size = resize(
        data,
        width,
        height,
        out_format,
        upscale,
        int(payload.get("quality", 85)),
        max_input_pixels,
        max_output_pixels,
    )
    del data
    ctx.progress(0.8, f"resized to {size[0]}x{size[1]}; writing")
    content_type = Image.MIME.get(fmt, "application/octet-stream")

    def write(overwrite: bool, metadata: dict[str, str]) -> None:
        target.put(out_key, encoded, content_type, overwrite=overwrite, metadata=metadata)

    try:
        write_new(ctx, target, f"s3://{target_bucket}/{out_key}", out_key, "output_key", write)
    except NotFound as exc:
        raise PermanentError(f"output_bucket: no bucket {target_bucket!r}") from exc
    ctx.progress(1.0, "written")
    return {
        "bucket": target_bucket,
        "key": out_key,
        "width": size[0],
        "height": size[1],
        "bytes": len(encoded),
        "format": fmt,
        "content_type": content_type,
        "source": {"bucket": source_bucket, "key": key, "width": source_size[0], "height": source_size[1]},
    }
