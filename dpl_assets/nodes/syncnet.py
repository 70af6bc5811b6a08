"""SyncNet audio-visual offsets with user-supplied weights (the public ``syncnet_v2`` layout).

The model is the "S" network of Joon Son Chung's ``syncnet_python``
(https://github.com/joonson/syncnet_python, ``SyncNetModel.py``; Chung & Zisserman, "Out
of time: automated lip sync in the wild", ACCV 2016 workshops), written here with the
same layer names (``netcnnaud``, ``netfcaud``, ``netcnnlip``, ``netfclip``) so its
published state dict, ``syncnet_v2.model``, loads as it is (:func:`load_syncnet`). Its
inputs, as that repository's ``SyncNetInstance.evaluate`` and ``run_pipeline.crop_video``
make them:

- video: 5 consecutive face crops, colour (BGR, 0..255, not normalized), 224 x 224,
  cut around the detection box (half-size ``s = max(w, h) / 2``, its centre smoothed with
  a 13-frame median): rows ``cy - s .. cy + 2.8 s - s``, columns ``cx - 1.4 s .. cx + 1.4 s``
  of the frame padded with grey 110 (:func:`face_crop`); shape (B, 3, 5, 224, 224);
- audio: the 13 MFCCs of python_speech_features' ``mfcc`` defaults over the int16-scaled
  16 kHz audio (:func:`mfcc`), 20 steps (0.2 s) from step ``4 i`` for frame ``i``: shape
  (B, 1, 13, 20);
- both embedded in 1024 dimensions; for each lag ``-max_lag .. max_lag`` the mean
  Euclidean distance between frame ``i``'s video and frame ``i + lag``'s audio
  embedding; the lag of the smallest mean distance is the offset, and the confidence is
  the median minus the minimum of those means. (The original pads the audio embeddings
  with zeros at the ends; here each lag averages the pairs that exist.)

Lag convention as :mod:`dpl_assets.nodes.av_sync` (positive = audio late):
``syncnet_python`` prints ``offset = -lag``. The audio steps are placed by the frames'
timestamps (4 steps a frame at 25 fps, the rate SyncNet was trained at).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from dpl_assets.nodes.av_sync import TrackSync

CROP_SIZE = 224
WINDOW_FRAMES = 5
MFCC_STEPS_PER_WINDOW = 20
MFCC_RATE_HZ = 100  # 10 ms hop
CROP_SCALE = 0.4  # run_pipeline.py's --crop_scale
PAD_VALUE = 110
BATCH_WINDOWS = 16


class SyncNetS(nn.Module):
    """SyncNet's "S" model (``syncnet_python`` ``SyncNetModel.S``), layer for layer.

    ``forward_aud``: MFCC (B, 1, 13, 20) -> (B, 1024); ``forward_lip``: crops
    (B, 3, 5, 224, 224) -> (B, 1024)."""

    def __init__(self, num_layers_in_fc_layers: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, num_layers_in_fc_layers),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, num_layers_in_fc_layers),
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
            nn.BatchNorm3d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.view(mid.size(0), -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnlip(x)
        return self.netfclip(mid.view(mid.size(0), -1))


class SyncNet:
    """A loaded :class:`SyncNetS` in eval mode on ``device``."""

    def __init__(self, net: SyncNetS, device: str) -> None:
        self.net = net.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def audio_embeddings(self, windows: np.ndarray) -> np.ndarray:
        """MFCC windows float32 (B, 13, 20) -> embeddings float32 (B, 1024)."""
        out = [
            self.net.forward_aud(
                torch.from_numpy(windows[i : i + BATCH_WINDOWS, None]).to(self.device)
            ).cpu()
            for i in range(0, len(windows), BATCH_WINDOWS)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 1024), np.float32)

    @torch.inference_mode()
    def lip_embeddings(self, windows: np.ndarray) -> np.ndarray:
        """Crop windows uint8 (B, 5, 224, 224, 3) BGR -> embeddings float32 (B, 1024)."""
        tensor = torch.from_numpy(windows).to(self.device).permute(0, 4, 1, 2, 3).float()
        return self.net.forward_lip(tensor).cpu().numpy()


def load_syncnet(path: str | Path, device: str = "cpu") -> SyncNet:
    """SyncNet from a ``syncnet_v2.model`` file (a state dict of :class:`SyncNetS`'s layer
    names, loaded with ``weights_only``). FileNotFoundError naming the file when it is
    missing; RuntimeError naming the mismatched layers when it is not that layout."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"SyncNet weights not found: {file}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    net = SyncNetS()
    net.load_state_dict(state)
    return SyncNet(net, device)


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def mfcc(samples: np.ndarray, sample_rate_hz: int = 16_000) -> np.ndarray:
    """13 MFCCs per 10 ms step, float32 (T, 13): python_speech_features' ``mfcc`` with its
    defaults on int16-scaled audio, exactly what ``syncnet_python`` feeds the model
    (25 ms windows every 10 ms, 26 mel filters, lifter 22, coefficient 0 the log frame
    energy). ``samples`` float (S,) in [-1, 1]."""
    import python_speech_features

    signal = np.asarray(samples, np.float64) * 32768.0
    return python_speech_features.mfcc(signal, sample_rate_hz).astype(np.float32)


def face_crop(frame: np.ndarray, centre: np.ndarray, half_size: float) -> np.ndarray:
    """SyncNet's face crop of an RGB frame (H, W, 3): BGR uint8 (224, 224, 3) of rows
    ``cy - s .. cy + 1.8 s`` and columns ``cx - 1.4 s .. cx + 1.4 s`` (``s`` =
    ``half_size`` px, the box's centre ``centre`` (x, y) px), grey 110 beyond the frame."""
    pad = int(half_size * (1 + 2 * CROP_SCALE))
    padded = cv2.copyMakeBorder(
        frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=[PAD_VALUE] * 3
    )
    cx, cy = centre[0] + pad, centre[1] + pad
    s = half_size
    face = padded[
        int(cy - s) : int(cy + s * (1 + 2 * CROP_SCALE)),
        int(cx - s * (1 + CROP_SCALE)) : int(cx + s * (1 + CROP_SCALE)),
    ]
    face = cv2.resize(face, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(face, cv2.COLOR_RGB2BGR)


def _smoothed_boxes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 2) and half-sizes (N,) of boxes (N, >=4) px, each 13-frame median
    filtered over the frames that have a box (NaN elsewhere), as ``crop_video`` does."""
    from scipy.signal import medfilt

    present = np.isfinite(boxes[:, :4]).all(axis=1)
    centres = np.full((len(boxes), 2), np.nan)
    halves = np.full(len(boxes), np.nan)
    kept = boxes[present].astype(np.float64)
    if len(kept):
        size = np.maximum(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]) / 2
        kernel = min(13, len(kept) - (len(kept) % 2 == 0))  # odd, at most the frames kept
        halves[present] = medfilt(size, kernel)
        centres[present, 0] = medfilt((kept[:, 0] + kept[:, 2]) / 2, kernel)
        centres[present, 1] = medfilt((kept[:, 1] + kept[:, 3]) / 2, kernel)
    return centres, halves


# --------------------------------------------------------------------------------------
# A clip
# --------------------------------------------------------------------------------------


def distance_curve(
    video: np.ndarray, video_frames: np.ndarray, audio: np.ndarray, max_lag: int
) -> np.ndarray:
    """Mean Euclidean distance per lag ``-max_lag .. max_lag``: float64 (2 max_lag + 1,).

    ``video`` (V, D) are the embeddings of the windows starting at frames ``video_frames``
    (V,); ``audio`` (A, D) the audio embedding of the window starting at each frame
    ``0 .. A-1``. Entry ``max_lag + k`` averages ``|video[j] - audio[frame_j + k]|`` over
    the pairs that exist (NaN when none does)."""
    curve = np.full(2 * max_lag + 1, np.nan)
    frames = np.asarray(video_frames, int)
    for index, lag in enumerate(range(-max_lag, max_lag + 1)):
        target = frames + lag
        ok = (target >= 0) & (target < len(audio))
        if ok.any():
            curve[index] = float(np.linalg.norm(video[ok] - audio[target[ok]], axis=1).mean())
    return curve


def sync_tracks_syncnet(
    model: SyncNet,
    images: Any,
    track_boxes: Sequence[np.ndarray],
    wav: np.ndarray,
    max_lag: int,
) -> tuple[list[TrackSync], int | None]:
    """Each face track against the audio with SyncNet, and the speaking track.

    ``images``: the video's image stack (an ImageStackRef: ``.open()`` streams RGB frames,
    ``.frame_times()`` their seconds); ``track_boxes``: per track boxes (N, 5) px, NaN
    where absent; ``wav`` float32 (S,) 16 kHz. Per track a :class:`TrackSync` whose curve
    is the mean distance per lag (:func:`distance_curve`), best lag at its minimum,
    confidence = median - minimum; the speaking track has the highest confidence (None
    when no track has 5 consecutive frames)."""
    times = np.asarray(images.frame_times(), np.float64)
    audio = audio_window_embeddings(model, wav, times)
    with images.open() as frames:
        windows = lip_window_embeddings(model, frames, track_boxes)
    results = []
    for video, starts in windows:
        curve = (
            distance_curve(video, starts, audio, max_lag)
            if len(starts)
            else np.full(2 * max_lag + 1, np.nan)
        )
        results.append(TrackSync.of_distances(curve))
    scored = [i for i, r in enumerate(results) if np.isfinite(r.curve).any()]
    speaking = max(scored, key=lambda i: results[i].confidence) if scored else None
    return results, speaking


def audio_window_embeddings(model: SyncNet, wav: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Audio embedding (A, 1024) of the 20 MFCC steps from each frame's time, for the
    frames whose window lies inside the audio (A <= N, the first ones)."""
    coefficients = mfcc(wav)
    starts = np.round(np.asarray(frame_times) * MFCC_RATE_HZ).astype(int)
    usable = starts[(starts >= 0) & (starts + MFCC_STEPS_PER_WINDOW <= len(coefficients))]
    windows = np.stack(
        [coefficients[s : s + MFCC_STEPS_PER_WINDOW].T for s in usable]
        or [np.zeros((13, MFCC_STEPS_PER_WINDOW), np.float32)]
    )[: len(usable)]
    return model.audio_embeddings(np.ascontiguousarray(windows, np.float32))


def lip_window_embeddings(
    model: SyncNet, frames: Iterable[np.ndarray], track_boxes: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per track, the lip embeddings (V, 1024) of every 5 consecutive frames that have
    the track's face, and the start frame of each (V,). Streams the frames: holds 5 crops
    and one batch of windows per track."""
    smoothed = [_smoothed_boxes(boxes) for boxes in track_boxes]
    recent: list[list[np.ndarray | None]] = [[] for _ in track_boxes]
    pending: list[list[tuple[int, np.ndarray]]] = [[] for _ in track_boxes]
    done: list[list[np.ndarray]] = [[] for _ in track_boxes]
    starts: list[list[int]] = [[] for _ in track_boxes]

    def flush(t: int) -> None:
        if pending[t]:
            done[t].append(model.lip_embeddings(np.stack([w for _, w in pending[t]])))
            starts[t].extend(s for s, _ in pending[t])
            pending[t].clear()

    for index, frame in enumerate(frames):
        for t, (centres, halves) in enumerate(smoothed):
            crop = None
            if index < len(halves) and np.isfinite(halves[index]):
                crop = face_crop(frame, centres[index], float(halves[index]))
            recent[t] = [*recent[t][-(WINDOW_FRAMES - 1) :], crop]
            window = recent[t]
            if len(window) == WINDOW_FRAMES and all(c is not None for c in window):
                pending[t].append((index - WINDOW_FRAMES + 1, np.stack(window)))  # type: ignore[arg-type]
                if len(pending[t]) >= BATCH_WINDOWS:
                    flush(t)
    for t in range(len(track_boxes)):
        flush(t)
    return [
        (
            np.concatenate(done[t]) if done[t] else np.zeros((0, 1024), np.float32),
            np.array(starts[t], int),
        )
        for t in range(len(track_boxes))
    ]
