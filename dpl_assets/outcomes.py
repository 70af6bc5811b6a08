"""Per-video outcomes that are values, not exceptions (video2dataset's lesson).

A node raises :class:`InputRejected` when the *input* is bad (empty, truncated, no audio
stream, no face): the video is recorded as rejected with that reason and the rest of the
batch goes on. Any other exception is a failure: it is reported and retried on a later run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class InputRejected(Exception):
    """The input cannot yield this artefact; ``reason`` names the file and the cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rejected:
    """A rejection recorded for one video and datatype.

    ``origin`` is the datatype whose computation rejected the video first; downstream
    datatypes carry the same reason with their own ``datatype``.
    """

    reason: str
    origin: str

    def to_json(self) -> dict[str, str]:
        return {"status": "rejected", "reason": self.reason, "origin": self.origin}


@dataclass(frozen=True)
class Kept:
    """The artefact already exists and ``recompute`` is off: the stored file stays as it is."""


@dataclass(frozen=True)
class Saved:
    """The per-video loop wrote this array artefact already; the step carries this marker
    in its place. Dagster's in-process runs (``execute_in_process``, as ``dpl run`` uses)
    keep every step's return value until the run ends, so a long clip's arrays (a 60-min
    clip's 478-point mesh alone is ~520 MB) would otherwise stay in memory through every
    later step."""


@dataclass(frozen=True)
class StagedFile:
    """An artefact a node streamed to a staging path; the IO manager moves it into place.

    Used for outputs too large to hold in memory (image stacks). The staging folder is on
    the output dir's file system, so the move is an atomic rename.
    """

    path: Path
