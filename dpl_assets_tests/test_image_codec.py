"""decode_image: JPEGs decoded by simplejpeg give OpenCV's pixels exactly (OpenCV's own
decoder is the reference), JPEGs with EXIF orientation and PNGs go to OpenCV, bad bytes are
refused."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from dpl_assets.storage import image_codec
from dpl_assets.storage.image_codec import decode_image


def _picture(height: int = 61, width: int = 47) -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 3)


def _pil_jpeg(pixels: np.ndarray, mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def _opencv(data: bytes, channels: int) -> np.ndarray:
    buffer = np.frombuffer(data, np.uint8)
    if channels == 1:
        return cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


JPEGS = {
    "4:2:0 (ours)": lambda p: image_codec.encode_image(p, "jpeg", 95),
    "4:4:4": lambda p: _pil_jpeg(p, subsampling=0),
    "4:2:2": lambda p: _pil_jpeg(p, subsampling=1),
    "progressive": lambda p: _pil_jpeg(p, progressive=True),
    "grey": lambda p: _pil_jpeg(p, "L"),
    "CMYK": lambda p: _pil_jpeg(p, "CMYK"),
}


@pytest.mark.parametrize("kind", JPEGS)
@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_pixels_are_opencvs(kind, channels):
    data = JPEGS[kind](_picture())
    ours = decode_image(data, channels)
    reference = _opencv(data, channels)
    assert ours.dtype == np.uint8 and ours.shape == reference.shape
    np.testing.assert_array_equal(ours, reference)
    # an h5py vlen entry (1-D uint8 array) decodes the same
    np.testing.assert_array_equal(decode_image(np.frombuffer(data, np.uint8), channels), ours)


def test_jpeg_goes_through_simplejpeg(monkeypatch):
    data = image_codec.encode_image(_picture(), "jpeg", 95)
    monkeypatch.setattr(image_codec.cv2, "imdecode", None)  # OpenCV's decoder unusable
    assert decode_image(data).shape == (61, 47, 3)


def test_exif_orientation_is_applied_as_opencv_does():
    pixels = _picture(40, 24)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, exif=exif.tobytes())
    data = out.getvalue()
    decoded = decode_image(data)
    assert decoded.shape == (24, 40, 3)  # upright, as OpenCV shows it
    np.testing.assert_array_equal(decoded, _opencv(data, 3))


def test_png_and_bad_bytes():
    pixels = _picture()
    png = image_codec.encode_image(pixels, "png")
    np.testing.assert_array_equal(decode_image(png), pixels)  # lossless
    truncated = image_codec.encode_image(pixels, "jpeg", 95)[:20]
    for bad in (truncated, b"not an image at all"):
        with pytest.raises(ValueError, match="not a decodable JPEG/PNG image"):
            decode_image(bad)
