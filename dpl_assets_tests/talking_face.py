"""Talking-face test media: real face photos made to talk by real speech, offline.

No real video of a face speaking can be had offline (``/work/shared/design/TEST_MEDIA.md``),
so the tests make one: a real face photo (skimage's astronaut, matplotlib's Grace Hopper)
whose lower lip and jaw are moved down by a piecewise-affine warp
(:class:`skimage.transform.PiecewiseAffineTransform`) in proportion to the loudness of real
speech (LibriVox readings of Debian's ``pocketsphinx-testdata``), the opened inner-lip
polygon painted dark as an open mouth is. The mouth points are found once, on the still
photo, with the project's face model. The audio muxed in can be shifted by a known
number of frames (positive: the audio is late, heard after the mouth moves).

References the tests take from here are independent of the node under test: the shift
given to :func:`make_talking_clip` and which face the heard speech drives.

Frames are warped from a few precomputed openings (:data:`OPENING_LEVELS`): the warp's
coordinate maps are made once per photo and level and applied with ``cv2.remap``, so a
5 s clip takes well under a second to make.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dpl_assets.media.ffmpeg import ffmpeg_executable
from dpl_assets_tests import media_factory as media

FPS = 25
SAMPLE_RATE_HZ = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE_HZ // FPS  # 640
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
READINGS = {
    "dashwood": "sense_and_sensibility_01_austen_64kb-0870.wav",  # 7.1 s
    "married": "sense_and_sensibility_01_austen_64kb-0920.wav",  # 6.05 s
}
OPENING_LEVELS = 24  # warps precomputed between a shut (0) and a fully open (1) mouth

# iBUG 68-point indices (0-based) moved by the opening, and how far (fraction of the
# lower lip's move): the lower lip all the way, the chin and jaw less, as a jaw opens.
LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
JAW_SHARE = {4: 0.1, 5: 0.3, 6: 0.6, 7: 0.6, 8: 0.6, 9: 0.6, 10: 0.6, 11: 0.3, 12: 0.1}
INNER_LIPS = (60, 61, 62, 63, 64, 65, 66, 67)
OPEN_LIP_DROP = 0.4  # the lower lip's move when fully open, in mouth widths (48 to 54)


def have_media() -> bool:
    """Whether the speech readings and the photos are installed (the tests skip if not)."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return all((LIBRIVOX / name).is_file() for name in READINGS.values())


@functools.cache
def speech(name: str) -> np.ndarray:
    """Reading ``name`` (a key of :data:`READINGS`): float32 (S,) in [-1, 1] at 16 kHz."""
    with wave.open(str(LIBRIVOX / READINGS[name]), "rb") as reader:
        assert reader.getframerate() == SAMPLE_RATE_HZ and reader.getnchannels() == 1
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
    return (pcm.astype(np.float32) / 32768.0).copy()


def mouth_opening_of(samples: np.ndarray, frames: int) -> np.ndarray:
    """How open the mouth is per frame, float64 (frames,) in [0, 1], from the speech's
    RMS over the 640 samples centred on each frame's time ``i / 25`` s (divided by its
    95th percentile, clipped) smoothed over 3 frames: a mouth follows the voice's
    loudness, not its every peak."""
    half = SAMPLES_PER_FRAME // 2
    padded = np.zeros(half + frames * SAMPLES_PER_FRAME, np.float64)  # frame 0 at sample 0
    take = min(padded.size - half, samples.size)
    padded[half : half + take] = samples[:take]
    windows = padded[: frames * SAMPLES_PER_FRAME].reshape(frames, SAMPLES_PER_FRAME)
    rms = np.sqrt((windows**2).mean(axis=1))
    level = np.clip(rms / max(float(np.percentile(rms, 95)), 1e-9), 0.0, 1.0)
    return np.convolve(np.pad(level, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")


# --------------------------------------------------------------------------------------
# Photos and their warps
# --------------------------------------------------------------------------------------


def astronaut_face() -> np.ndarray:
    """The astronaut's head and shoulders, 256 x 256 RGB (face about 95 px wide)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[2:258, 97:353])


def hopper_face(size: tuple[int, int]) -> np.ndarray:
    """Grace Hopper's head, RGB resized to ``size`` (width, height)."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)
    photo = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)[20:420, 60:460]  # 400 x 400 around the face
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA)


@dataclass
class TalkingPhoto:
    """A photo that can open its mouth: ``maps[k]`` the float32 (H, W) x and y coordinate
    maps (``cv2.remap``) of opening ``k / (OPENING_LEVELS - 1)``, and the inner-lip
    polygon (8, 2) px per level."""

    photo: np.ndarray
    maps: list[tuple[np.ndarray, np.ndarray]]
    lips: list[np.ndarray]

    def frame(self, opening: float) -> np.ndarray:
        """The photo with its mouth ``opening`` (0 shut .. 1 open) open, RGB uint8."""
        level = round(float(np.clip(opening, 0, 1)) * (OPENING_LEVELS - 1))
        map_x, map_y = self.maps[level]
        out = cv2.remap(self.photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if level:
            polygon = np.round(self.lips[level] * 16).astype(np.int32)  # 4 fractional bits
            cv2.fillPoly(out, [polygon], (45, 20, 25), cv2.LINE_AA, shift=4)
        return out


def talking_photo(photo: np.ndarray) -> TalkingPhoto:
    """Find the 68 points of ``photo`` (RGB uint8) once with the project's face model and
    precompute its mouth warps. AssertionError when no face is found."""
    from dpl_assets.nodes.faces import FaceAnalyzer

    # Closed at once: an open mediapipe graph keeps stderr piped (native_logs) for the
    # rest of the test session.
    with FaceAnalyzer() as model:
        found = model.analyze([photo], landmark_mode="static")
    assert found.detected[0], "no face found in the photo"
    points = found.landmarks[0].astype(np.float64)
    height, width = photo.shape[:2]
    drop = np.zeros_like(points)
    lip_drop = OPEN_LIP_DROP * float(np.linalg.norm(points[54] - points[48]))
    drop[list(LOWER_LIP), 1] = lip_drop
    for index, share in JAW_SHARE.items():
        drop[index, 1] = share * lip_drop
    # The frame's border stays put, so the warp covers every pixel and moves only the jaw.
    edge_x = np.linspace(0, width - 1, 5)
    edge_y = np.linspace(0, height - 1, 5)
    border = np.array(
        [(x, y) for x in edge_x for y in (0, height - 1)]
        + [(x, y) for y in edge_y[1:-1] for x in (0, width - 1)],
        np.float64,
    )
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)
    grid = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    maps, lips = [], []
    for level in range(OPENING_LEVELS):
        moved = points + drop * (level / (OPENING_LEVELS - 1))
        if level == 0:
            maps.append((grid_x.astype(np.float32), grid_y.astype(np.float32)))
        else:
            # Output pixel -> where it comes from in the photo: the warp from moved to still.
            source = _piecewise_affine(
                np.vstack([moved, border]), np.vstack([points, border]), grid
            )
            source = source.reshape(height, width, 2).astype(np.float32)
            maps.append(
                (np.ascontiguousarray(source[..., 0]), np.ascontiguousarray(source[..., 1]))
            )
        lips.append(moved[list(INNER_LIPS)])
    return TalkingPhoto(photo, maps, lips)


def _piecewise_affine(source: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The piecewise-affine map taking control points ``source`` (K, 2) to ``target``
    (K, 2), at ``points`` (P, 2): each point moved by the affine map of the Delaunay
    triangle of ``source`` that holds it (barycentric weights), as
    :class:`skimage.transform.PiecewiseAffineTransform` maps, vectorized (skimage's loop
    over triangles takes seconds per 256 x 256 map). Points outside every triangle keep
    their place."""
    from scipy.spatial import Delaunay

    triangulation = Delaunay(source)
    simplex = triangulation.find_simplex(points)
    inside = simplex >= 0
    affine = triangulation.transform[simplex[inside]]  # (P, 3, 2): inverse basis + origin
    partial = np.einsum("pij,pj->pi", affine[:, :2], points[inside] - affine[:, 2])
    weights = np.column_stack([partial, 1.0 - partial.sum(axis=1)])  # (P, 3) barycentric
    corners = target[triangulation.simplices[simplex[inside]]]  # (P, 3, 2)
    out = points.astype(np.float64).copy()
    out[inside] = np.einsum("pk,pkj->pj", weights, corners)
    return out


@functools.cache
def _astronaut() -> TalkingPhoto:
    return talking_photo(astronaut_face())


@functools.cache
def _two_faces() -> tuple[TalkingPhoto, TalkingPhoto]:
    """Left: the astronaut (larger); right: Grace Hopper (smaller), each on 160 x 240."""
    from skimage import data

    left = np.ascontiguousarray(data.astronaut()[10:250, 145:305])
    right = np.full((240, 160, 3), 90, np.uint8)
    right[50:180, 15:145] = hopper_face((130, 130))
    return talking_photo(left), talking_photo(right)


# --------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------


def shifted(samples: np.ndarray, frames: int, shift_frames: int) -> np.ndarray:
    """``frames`` frames' worth of ``samples`` moved ``shift_frames`` frames later (earlier
    when negative): silence where nothing is left to hear, float32."""
    total = frames * SAMPLES_PER_FRAME
    out = np.zeros(total + abs(shift_frames) * SAMPLES_PER_FRAME, np.float32)
    start = max(shift_frames, 0) * SAMPLES_PER_FRAME
    skip = max(-shift_frames, 0) * SAMPLES_PER_FRAME
    piece = samples[skip : skip + total]
    out[start : start + piece.size] = piece
    return out[:total]


def _encode(path: Path, frames: list[np.ndarray], audio: np.ndarray) -> Path:
    """Frames (RGB uint8, 25 fps, H.264) and 16 kHz mono audio (AAC) into an mp4."""
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wav = Path(scratch) / "audio.wav"
        with wave.open(str(wav), "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(SAMPLE_RATE_HZ)
            writer.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        subprocess.run(
            [ffmpeg_executable(), "-nostdin", "-v", "error", "-y",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-r", str(FPS), "-i", "pipe:0", "-i", "file:" + str(wav),
             "-map", "0:v:0", "-map", "1:a:0", *media._video_codec_args(), "-crf", "18",
             "-c:a", "aac", "-b:a", "96k", "-shortest", "file:" + str(path.absolute())],
            input=np.stack(frames).tobytes(), check=True,
        )  # fmt: skip
    return path


def make_talking_clip(
    path: Path, shift_frames: int = 0, seconds: float = 5.0, still: bool = False
) -> Path:
    """The astronaut (256 x 256, 25 fps) saying the ``dashwood`` reading, the audio moved
    ``shift_frames`` frames later (positive: audio late; negative: early). ``still``: the
    mouth stays shut while the speech is heard."""
    frames = round(seconds * FPS)
    voice = speech("dashwood")
    opening = np.zeros(frames) if still else mouth_opening_of(voice, frames)
    face = _astronaut()
    return _encode(path, [face.frame(o) for o in opening], shifted(voice, frames, shift_frames))


def make_two_faces_clip(path: Path, seconds: float = 5.0) -> Path:
    """Two faces side by side (320 x 240): the astronaut (left, the larger) mouthing the
    ``married`` reading, which is not heard, and Grace Hopper (right) saying the
    ``dashwood`` reading, which is the clip's audio (in sync). The speaker is the right,
    smaller face."""
    frames = round(seconds * FPS)
    heard, unheard = speech("dashwood"), speech("married")
    left, right = _two_faces()
    pictures = [
        np.hstack([left.frame(a), right.frame(b)])
        for a, b in zip(mouth_opening_of(unheard, frames), mouth_opening_of(heard, frames))
    ]
    return _encode(path, pictures, shifted(heard, frames, 0))
