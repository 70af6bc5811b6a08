"""The artefact store: where each (datatype, video) artefact and its status records live.

Layout under the output dir, as in the original tool:
- ``{key}/{video_id}{ext}``: the artefact (complete whenever it exists: writes are atomic);
- ``_status/{key}/{video_id}.rejected.json``: why the video cannot yield this datatype;
- ``_status/{key}/{video_id}.failed.json``: the last unexpected error (cleared on success);
- ``_staging/{key}/``: large artefacts being streamed (image stacks); never read as done;
  named ``{video_id}.{token}{ext}`` with the writer's token (see
  :func:`~dpl_assets.storage.locks.writer_token`), so a dead writer's files are found and
  removed (:meth:`ArtifactStore.remove_dead_staging`) and a live writer's never are;
- ``_claims/{key}/{video_id}.lock``: held (flock) by the process computing that artefact, so
  concurrent runs never compute it twice (see :mod:`dpl_assets.assets.batch`);
- ``_checks/{key}/{video_id}.json``: the last output check of the artefact (problems found).

A (datatype, video) pair is *done* when its artefact or its rejection exists; done pairs
are skipped unless a node's ``recompute`` is set. User-given roots for a datatype (a
``wav`` folder in the inputs, say) take precedence over the pipeline's own outputs.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import soundfile

from dpl_assets.catalog import Catalog, fingerprint
from dpl_assets.datatypes import DATATYPES, Datatype, StorageFormat, get_datatype
from dpl_assets.outcomes import Kept, Rejected, Saved
from dpl_assets.storage.atomic import atomic_write_text
from dpl_assets.storage.formats import read_artifact, write_artifact
from dpl_assets.storage.locks import Claim, writer_alive, writer_token

STATUS_DIR = "_status"
STAGING_DIR = "_staging"
CHECKS_DIR = "_checks"
CLAIMS_DIR = "_claims"
WRITERS_SUBDIR = ".writers"  # in _staging: one locked marker per live writer process
_STAGED_TOKEN = re.compile(r"\.(\d+-[0-9a-f]{8})(?=\.[^.]*$|$)")

_saved_lock = threading.Lock()
_saved_by_loop: dict[tuple[str, str, str], Any] = {}
"""(output dir, key, video id) -> the value the per-video loop already saved (see
:meth:`ArtifactStore.mark_saved`); the IO manager then does not write it again."""


FEATURE_RATE_HZ = 50
"""Steps per second of the audio features (wav2vec, volume): a 320-sample hop at 16 kHz."""


def artifact_stats(datatype: Datatype, path: Path) -> dict[str, int | float | str]:
    """What one artefact file holds, each value named with its unit, read from the file.

    Per-frame arrays and stacks: ``video_frames`` (their first axis, N); audio features:
    ``feature_steps_50hz`` (T) and ``audio_s``; wav: ``samples``, ``sample_rate_hz`` and
    ``audio_s``; image stacks: ``first_frame_s`` / ``last_frame_s`` (timestamps) and the frame
    size; videos (previews): ``video_frames`` (packets of the video stream), ``duration_s``;
    PNG: its size in pixels; JSON records: the numbers their datatype declares (the faces
    record: coverage and faces seen). Always ``size_bytes``.
    Unreadable details are left out (the output check reports broken files).
    """
    stats: dict[str, int | float | str] = {"size_bytes": path.stat().st_size}
    suffix = path.suffix.lower()
    try:
        if datatype.storage is StorageFormat.WAV:
            info = soundfile.info(str(path))
            stats.update(
                samples=int(info.frames),  # libsndfile calls a sample per channel a frame
                sample_rate_hz=int(info.samplerate),
                audio_s=round(info.frames / info.samplerate, 3),
            )
        elif datatype.storage is StorageFormat.NPY:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            stats.update(shape=str(tuple(array.shape)), dtype=str(array.dtype))
            stats.update(_first_axis(datatype, array.shape))
        elif datatype.storage is StorageFormat.IMAGE_STACK or suffix == ".h5":
            with h5py.File(path, "r") as file:
                stats.update(_h5_stats(file))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                if "timestamps" in arrays:
                    stats["video_frames"] = int(arrays["timestamps"].shape[0])
        elif suffix in (".mp4", ".mov", ".mkv", ".webm"):
            stats.update(_video_stats(path))
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                stats.update(width_px=image.width, height_px=image.height)
        elif datatype.record_stats:
            record = json.loads(path.read_text(encoding="utf-8"))
            stats.update(_record_stats(datatype, record))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return stats


def _first_axis(datatype: Datatype, shape: tuple[int, ...]) -> dict[str, int | float]:
    """The first axis by its meaning in the datatype's contract: video frames (``N``) or
    50 Hz audio feature steps (``T``)."""
    if datatype.contract is None or not shape:
        return {}
    axis = datatype.contract.shape[0]
    if axis == "N":
        return {"video_frames": int(shape[0])}
    if axis == "T":
        return {
            "feature_steps_50hz": int(shape[0]),
            "audio_s": round(shape[0] / FEATURE_RATE_HZ, 3),
        }
    return {}


def _h5_stats(file: h5py.File) -> dict[str, int | float]:
    stats: dict[str, int | float] = {}
    if "timestamps" in file:
        times = file["timestamps"][:]
        stats["video_frames"] = int(times.shape[0])
        if times.size:
            stats.update(
                first_frame_s=round(float(times[0]), 3), last_frame_s=round(float(times[-1]), 3)
            )
    for attribute, name in (("width", "frame_width_px"), ("height", "frame_height_px")):
        if attribute in file.attrs:
            stats[name] = int(file.attrs[attribute])
    return stats


def _video_stats(path: Path) -> dict[str, int | float | str]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            return {}
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        count, last_end = 0, 0.0
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            count += 1
            if packet.pts is not None and packet.time_base is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                last_end = max(last_end, end)
    return {"video_frames": count, "duration_s": round(last_end, 3), "has_audio": has_audio}


def _record_stats(datatype: Datatype, record: dict[str, Any]) -> dict[str, int | float]:
    """The numbers a JSON record's datatype declares (:attr:`Datatype.record_stats`)."""
    stats: dict[str, int | float] = {}
    for stat in datatype.record_stats:
        value = record.get(stat.field)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        stats[stat.name] = int(value) if stat.scale is None else round(stat.scale * value, 1)
    return stats


class MissingArtifactError(FileNotFoundError):
    """An input artefact is neither produced yet nor given in the user's roots."""


class ArtifactStore:
    """Paths, reads and writes of artefacts under one output dir."""

    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir).resolve()
        self.catalog = Catalog(self.output_dir)

    def artifact_path(self, key: str, video_id: str) -> Path:
        return self.output_dir / key / (video_id + get_datatype(key).output_extension)

    def staging_path(self, key: str, video_id: str) -> Path:
        """Where a node streams a large artefact before it is moved into place: named with
        this process's writer token, so two runs of the same video never share a file and
        a killed run's files are recognised (:meth:`remove_dead_staging`)."""
        token = writer_token(self._writers_dir)
        name = f"{video_id}.{token}{get_datatype(key).output_extension}"
        path = self.output_dir / STAGING_DIR / key / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def _writers_dir(self) -> Path:
        return self.output_dir / STAGING_DIR / WRITERS_SUBDIR

    def remove_dead_staging(self, keys: Iterable[str] | None = None) -> list[Path]:
        """Delete staged files (of ``keys``, default all) whose writer process is gone.

        A writer is gone when the lock on its marker can be taken (the OS released it when
        the process ended, however it ended); a live writer's files are never touched, and
        neither is anything whose name carries no writer token. Returns what was removed.
        """
        staging = self.output_dir / STAGING_DIR
        folders = [staging / key for key in keys] if keys is not None else (
            [p for p in staging.iterdir() if p.is_dir() and p.name != WRITERS_SUBDIR]
            if staging.is_dir() else []
        )  # fmt: skip
        verdicts: dict[str, bool] = {}
        removed = []
        for folder in folders:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                match = _STAGED_TOKEN.search(name)
                if match is None:
                    continue
                token = match.group(1)
                if token not in verdicts:
                    verdicts[token] = writer_alive(self._writers_dir, token)
                if not verdicts[token]:
                    path = folder / name
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def stats(self, key: str, video_id: str) -> dict[str, int | float | str]:
        """:func:`artifact_stats` of the video's artefact of ``key`` (ours)."""
        return artifact_stats(get_datatype(key), self.artifact_path(key, video_id))

    def rejection_record_path(self, key: str, video_id: str) -> Path:
        """Where the rejection of ``video_id`` for ``key`` is recorded (if it is)."""
        return self._status_path(key, video_id, "rejected")

    def claim(self, key: str, video_id: str) -> Claim:
        """The claim on computing ``key`` for ``video_id`` (not yet acquired)."""
        return Claim(self.output_dir / CLAIMS_DIR / key / f"{video_id}.lock")

    def done_at(self, key: str, video_id: str) -> float | None:
        """When the artefact or the rejection was written (None: not done)."""
        rejected = self._status_path(key, video_id, "rejected")
        for path in (self.artifact_path(key, video_id), rejected):
            try:
                return path.stat().st_mtime
            except FileNotFoundError:
                continue
        return None

    def mark_saved(self, key: str, video_id: str, value: Any) -> None:
        """Note that ``value`` is saved already (by the per-video loop, under its claim):
        :meth:`save_once` of that same object is then a no-op."""
        with _saved_lock:
            _saved_by_loop[(str(self.output_dir), key, video_id)] = value

    def save_once(self, key: str, video_id: str, value: Any) -> bool:
        """:meth:`save` unless this very value was saved already; True when it wrote."""
        with _saved_lock:
            entry = (str(self.output_dir), key, video_id)
            if entry in _saved_by_loop and _saved_by_loop[entry] is value:
                del _saved_by_loop[entry]
                return False
        self.save(key, video_id, value)
        return True

    def _status_path(self, key: str, video_id: str, status: str) -> Path:
        return self.output_dir / STATUS_DIR / key / f"{video_id}.{status}.json"

    def source_fingerprints(self, video_id: str) -> list | None:
        """``[size, mtime_ns]`` of each of the video's source files now (None if unknown)."""
        try:
            sources = self.catalog.entry(video_id).sources
        except KeyError:
            return None
        return [fingerprint(path) for _, path in sorted(sources.items())]

    def existing_file(self, key: str, video_id: str) -> Path | None:
        """The video's file of ``key``: the user's if given, else ours; None if neither."""
        given = self.user_source(key, video_id)
        if given is not None and given.exists():
            return given
        ours = self.artifact_path(key, video_id)
        return ours if ours.exists() else None

    def user_source(self, key: str, video_id: str) -> Path | None:
        """The user's own file for this datatype and video, when the inputs gave a root."""
        source = self.catalog.entry(video_id).sources.get(key)
        return Path(source) if source else None

    def rejection(self, key: str, video_id: str) -> Rejected | None:
        path = self._status_path(key, video_id, "rejected")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return Rejected(reason=record["reason"], origin=record["origin"])

    def failure(self, key: str, video_id: str) -> str | None:
        path = self._status_path(key, video_id, "failed")
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["error"])
        except FileNotFoundError:
            return None

    def is_done(self, key: str, video_id: str) -> bool:
        return (
            self.artifact_path(key, video_id).exists()
            or self._status_path(key, video_id, "rejected").exists()
        )

    def save(self, key: str, video_id: str, value: Any) -> None:
        """Persist one outcome: an artefact, a :class:`Rejected`, or :class:`Kept` /
        :class:`Saved` (no-op: the file is in place)."""
        if isinstance(value, Kept | Saved):
            return
        artifact = self.artifact_path(key, video_id)
        rejected = self._status_path(key, video_id, "rejected")
        if isinstance(value, Rejected):
            record = {**value.to_json(), "datatype": key, "video_id": video_id, "time": time.time()}
            atomic_write_text(rejected, json.dumps(record, indent=1, ensure_ascii=False))
            artifact.unlink(missing_ok=True)  # a stale artefact would contradict the record
        else:
            write_artifact(get_datatype(key), artifact, value)
            rejected.unlink(missing_ok=True)
        self._status_path(key, video_id, "failed").unlink(missing_ok=True)
        self._check_path(key, video_id).unlink(missing_ok=True)  # it checked the old file

    def record_failure(self, key: str, video_id: str, error: str) -> None:
        record = {"datatype": key, "video_id": video_id, "error": error, "time": time.time()}
        atomic_write_text(
            self._status_path(key, video_id, "failed"), json.dumps(record, ensure_ascii=False)
        )

    def record_damage(self, key: str, video_id: str, spans: list, summary: str) -> None:
        """Record where the source's data for ``key`` was damaged ((start_s, end_s) on the
        container clock) though the artefact was kept; an empty ``summary`` clears it."""
        path = self._status_path(key, video_id, "damaged")
        if not summary:
            path.unlink(missing_ok=True)
            return
        record = {"datatype": key, "video_id": video_id, "spans": spans, "damage": summary}
        atomic_write_text(path, json.dumps(record, ensure_ascii=False))

    def damage(self, key: str, video_id: str) -> dict | None:
        """The damage record of ``key`` for ``video_id`` (see :meth:`record_damage`)."""
        try:
            return dict(json.loads(self._status_path(key, video_id, "damaged").read_text()))
        except FileNotFoundError:
            return None

    def _check_path(self, key: str, video_id: str) -> Path:
        return self.output_dir / CHECKS_DIR / key / f"{video_id}.json"

    def save_check(self, key: str, video_id: str, problems: list[str]) -> None:
        """Record the output check of one artefact (an empty list: it passed)."""
        record = {"datatype": key, "video_id": video_id, "problems": problems, "time": time.time()}
        atomic_write_text(self._check_path(key, video_id), json.dumps(record, ensure_ascii=False))

    def check_problems(self, key: str, video_id: str) -> list[str] | None:
        """The problems the last output check found (None: never checked)."""
        try:
            record = json.loads(self._check_path(key, video_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return list(record["problems"])

    def forget(self, video_id: str) -> list[str]:
        """Delete every artefact and record of ``video_id`` (its source changed, so they are
        stale); returns the datatypes that had an artefact. Each deletion is atomic, and a
        crash midway leaves only fewer outputs, never stale ones counted as done."""
        removed = []
        for key, datatype in DATATYPES.items():
            if datatype.storage is StorageFormat.MEDIA:
                continue
            artifact = self.artifact_path(key, video_id)
            if artifact.exists():
                artifact.unlink()
                removed.append(key)
            for status in ("rejected", "failed", "damaged"):
                self._status_path(key, video_id, status).unlink(missing_ok=True)
            self._check_path(key, video_id).unlink(missing_ok=True)
        return removed

    def clear_rejections(self, video_id: str) -> list[str]:
        """Forget every rejection of ``video_id`` (to retry it); returns the datatypes cleared."""
        cleared = []
        status_root = self.output_dir / STATUS_DIR
        for folder in sorted(status_root.iterdir()) if status_root.is_dir() else []:
            record = folder / f"{video_id}.rejected.json"
            if record.exists():
                record.unlink()
                cleared.append(folder.name)
        return cleared

    def load(self, key: str, video_id: str) -> Any:
        """An input artefact: the user's file if given, else ours; or its :class:`Rejected`."""
        datatype = get_datatype(key)
        source = self.user_source(key, video_id)
        if source is not None and datatype.storage is not StorageFormat.MEDIA:
            return read_artifact(datatype, source)
        rejection = self.rejection(key, video_id)
        if rejection is not None:
            return rejection
        path = self.artifact_path(key, video_id)
        if not path.exists():
            raise MissingArtifactError(
                f"no {key!r} for video {video_id!r}: materialize {key!r} for it first, "
                f"or give a {key!r} root in the inputs ({path} does not exist)"
            )
        return read_artifact(datatype, path)
