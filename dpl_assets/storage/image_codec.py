"""Encoded images: the one JPEG/PNG encoder and decoder, and a header reader.

Every image the project stores is a standalone JPEG (baseline, 4:2:0) or PNG file, encoded
by :func:`encode_image` (OpenCV, whose RGB <-> BGR order is handled here) and decoded by
:func:`decode_image` (JPEG: simplejpeg, ~2x faster than OpenCV's and the same pixels, both
being libjpeg-turbo with its default IDCT and upsampling; PNG, and JPEG carrying EXIF
orientation, which OpenCV applies: OpenCV). :func:`image_header` reads format, size and
channels without decoding the pixels (Pillow). Both image-stack files
(:mod:`dpl_assets.storage.image_stack`) and training files (:mod:`dpl_assets.packing.layouts`)
go through these functions.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import h5py

IMAGE_FORMATS = ("jpeg", "png")
JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXIF_MARK = b"Exif\x00\x00"  # the APP1 segment's identifier

EncodedImage = bytes | bytearray | memoryview
"""Encoded JPEG/PNG bytes; a 1-D uint8 array (an h5py vlen entry) is accepted too."""


def encode_image(pixels: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """RGB uint8 (H, W, 3) or grey uint8 (H, W) -> one standalone JPEG or PNG file.

    JPEG: baseline, 4:2:0 chroma subsampling, ``quality`` 1..100. PNG: lossless,
    compression level 3 (``quality`` unused). Raises ValueError for another
    ``image_format`` or pixels OpenCV cannot encode.
    """
    bgr_or_grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    if image_format == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr_or_grey, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif image_format == "png":
        ok, data = cv2.imencode(".png", bgr_or_grey, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    if not ok:
        raise ValueError(f"could not encode a {pixels.shape} image as {image_format}")
    return data.tobytes()


def decode_image(data: EncodedImage | np.ndarray, channels: int = 3) -> np.ndarray:
    """JPEG/PNG bytes (or a 1-D uint8 array of them) -> RGB uint8 (H, W, 3) when
    ``channels`` is 3, else grey uint8 (H, W). Raises ValueError when they do not decode."""
    buffer = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if _plain_jpeg(buffer):
        try:
            if channels == 3:
                return simplejpeg.decode_jpeg(buffer, colorspace="RGB")
            return simplejpeg.decode_jpeg(buffer, colorspace="GRAY")[..., 0]
        except ValueError:
            pass  # OpenCV's decoder gives the verdict (and the one error message)
    if channels == 3:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("not a decodable JPEG/PNG image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    grey = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError("not a decodable JPEG/PNG image")
    return grey


def _plain_jpeg(buffer: np.ndarray) -> bool:
    """A JPEG without an EXIF block in its first 64 kB (whose orientation OpenCV would
    apply and simplejpeg would not)."""
    head = buffer[:65536].tobytes()
    return head.startswith(JPEG_MAGIC) and EXIF_MARK not in head


def decode_to_shape(
    data: EncodedImage | np.ndarray, frame_shape: tuple[int, ...], index: int, dset: h5py.Dataset
) -> np.ndarray:
    """Decode frame ``index`` of ``dset`` to ``frame_shape``: (H, W, 3) RGB or (H, W) grey
    uint8. Raises ValueError naming the frame and dataset when it decodes to another shape
    (or does not decode)."""
    frame = decode_image(data, 3 if len(frame_shape) == 3 else 1)
    if frame.shape != frame_shape:  # the dataset's name only now: h5py looks it up
        shape = frame.shape
        raise ValueError(f"frame {index} of {dset.name} decodes to {shape}, not {frame_shape}")
    return frame


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says: format, size (pixels), channels, bit depth.

    ``png_colour`` is the PNG colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha,
    6 RGBA); None for JPEG.
    """

    format: str
    height: int
    width: int
    channels: int
    bits: int
    png_colour: int | None = None


def image_header(data: EncodedImage | np.ndarray) -> ImageHeader:
    """Read a JPEG or PNG header without decoding the pixels (Pillow's ``Image.open`` reads
    the header only): format, size (pixels), channels, bits per sample.

    Raises ValueError for anything that is neither, or a header Pillow cannot read
    (truncated, corrupt, or a JPEG of other than 8 bits): ``JPEG bytes the decoder rejects
    (Truncated File Read)``.
    """
    raw = as_bytes(data)
    if raw.startswith(PNG_MAGIC):
        image_format = "png"
    elif raw.startswith(JPEG_MAGIC):
        image_format = "jpeg"
    else:
        raise ValueError("not a JPEG or PNG image (unknown magic bytes)")
    try:
        with Image.open(io.BytesIO(raw), formats=[image_format.upper()]) as image:
            width, height = image.size
            bands = len(image.getbands())
    except UnidentifiedImageError:  # its message names a BytesIO object, not the problem
        raise ValueError(f"{image_format.upper()} bytes the decoder rejects (bad header)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{image_format.upper()} bytes the decoder rejects ({error})") from None
    if image_format == "jpeg":  # Pillow opens 8-bit JPEGs only: grey (L), RGB or CMYK
        return ImageHeader("jpeg", height, width, bands, 8)
    # Pillow opens a 16-bit RGB PNG as mode RGB, a palette one as P (1 band): bit depth and
    # colour type are IHDR's bytes 24 and 25 (fixed in every PNG, just read by Pillow).
    bits, colour = raw[24], raw[25]
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[colour]
    return ImageHeader("png", height, width, channels, bits, colour)


def as_bytes(data: EncodedImage | np.ndarray) -> bytes:
    """Encoded bytes as ``bytes`` (an array's buffer copied; ``bytes`` returned as is)."""
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return bytes(data)


def is_encoded(item: Any) -> bool:
    """Bytes-like objects and 1-D uint8 arrays (what h5py returns for a vlen entry)."""
    if isinstance(item, bytes | bytearray | memoryview):
        return True
    return isinstance(item, np.ndarray) and item.ndim == 1 and item.dtype == np.uint8
