"""Claims: a video's outputs are computed and saved by one process at a time (file locks
under the output dir, held while the video is computed and saved)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from dpl_assets.storage.locks import Claim
from dpl_assets.storage.store import ArtifactStore

CLAIM_POLL_S = 0.2
"""Seconds between tries to take a claim another process holds."""


class VideoClaims:
    """This step's claims, one per (output, video): all of a video's outputs or none."""

    def __init__(self, store: ArtifactStore, outputs: Sequence[str]):
        self.store, self.outputs = store, sorted(outputs)
        self.held: dict[str, list[Claim]] = {}
        self.lock = threading.Lock()

    def try_claim(self, video_id: str) -> bool:
        """Claim every output of the video without waiting; False (holding none) if another
        process holds any of them."""
        claims = [self.store.claim(key, video_id) for key in self.outputs]
        for index, claim in enumerate(claims):
            if not claim.try_acquire():
                for taken in claims[:index]:
                    taken.release()
                return False
        with self.lock:
            self.held[video_id] = claims
        return True

    def wait(self, video_id: str) -> None:
        """Block until every output of the video is claimed, retrying every
        :data:`CLAIM_POLL_S` seconds."""
        while not self.try_claim(video_id):
            time.sleep(CLAIM_POLL_S)

    def release(self, video_id: str) -> None:
        """Release the video's claims (deleting their lock files); a no-op if none held."""
        with self.lock:
            claims = self.held.pop(video_id, [])
        for claim in claims:
            claim.release()

    def release_all(self) -> None:
        """Release every claim this step still holds (when the step ends, even on error)."""
        for video_id in list(self.held):
            self.release(video_id)
