"""``image-resize``: read an image from S3, fit it in a box keeping its aspect ratio,
write it back to S3.

The output format follows the output key's extension (``.png``, ``.jpg``, ``.webp``...),
or the source's format when the key has none Pillow can write. EXIF orientation is
applied first, so a portrait photo stays portrait. Images are only shrunk unless the
payload asks for ``upscale``. Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

import io
import posixpath
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from conveyor.errors import NotFound, PermanentError
from worker.handlers import handler
from worker.handlers.context import Context
from worker.handlers.storage import bucket

# Formats that cannot store an alpha channel: transparent pixels are flattened onto white.
_NO_ALPHA = {"JPEG", "BMP"}
_QUALITY = {"JPEG", "WEBP"}


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


def resize(
    data: bytes, width: int, height: int, fmt: str | None, upscale: bool, quality: int
) -> tuple[bytes, str, tuple[int, int], tuple[int, int]]:
    """Returns (encoded image, format, new size, source size)."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            source_size = source.size
            out_format = fmt or source.format
            if out_format not in Image.SAVE:
                raise PermanentError(
                    f"output_key: Pillow cannot write {out_format or 'this'} images; use .png, .jpg or .webp"
                )
            image = ImageOps.exif_transpose(source)
            if upscale:
                image = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
            else:
                image.thumbnail((width, height), Image.Resampling.LANCZOS)
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
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"key: image too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise PermanentError("key: the object is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise PermanentError(f"key: cannot decode the image: {exc}") from exc


@handler("image-resize")
def image_resize(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    key = str(payload["key"])
    width, height = int(payload["width"]), int(payload["height"])
    if width < 1 or height < 1:
        raise PermanentError("width, height: must be at least 1")
    source_bucket, source = bucket(ctx, payload.get("bucket"))
    target_bucket, target = bucket(ctx, payload.get("output_bucket") or source_bucket, "output_bucket")
    out_key = str(payload.get("output_key") or default_output_key(key, width, height))
    if out_key == key and target_bucket == source_bucket and not payload.get("overwrite"):
        raise PermanentError("output_key: equals key; set overwrite: true to replace the source")

    try:
        data = source.get(key)
    except NotFound as exc:
        raise PermanentError(f"key: no object s3://{source_bucket}/{key}") from exc
    ctx.raise_if_cancelled()
    encoded, fmt, size, source_size = resize(
        data,
        width,
        height,
        format_for(out_key),
        bool(payload.get("upscale", False)),
        int(payload.get("quality", 85)),
    )
    content_type = Image.MIME.get(fmt, "application/octet-stream")
    try:
        target.put(out_key, encoded, content_type)
    except NotFound as exc:
        raise PermanentError(f"output_bucket: no bucket {target_bucket!r}") from exc
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
