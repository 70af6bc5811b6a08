"""The IO manager: persists per-video artefacts by their datatype's storage format.

Assets in this project take and return ``{video_id: value}`` dicts, one entry per partition
of the step, so a step that covers many videos (a backfill with several partitions per run)
loads models once and still writes one file per video; the stock ``UPathIOManager`` refuses
such steps. Values may be artefacts, :class:`~dpl_assets.outcomes.Rejected` or
:class:`~dpl_assets.outcomes.Kept` (see :class:`~dpl_assets.storage.store.ArtifactStore`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from dpl_assets.storage.store import ArtifactStore


class ArtifactStorage(dg.ConfigurableResource):
    """Where artefacts live: the output dir (``{output_dir}/{key}/{video_id}{ext}``)."""

    output_dir: str

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.output_dir)


class LazyArtifacts(Mapping[str, Any]):
    """Per-video inputs of a step, read from disk only when a video is actually processed.

    Videos skipped as already done cost no read.
    """

    def __init__(self, store: ArtifactStore, key: str, video_ids: Sequence[str]):
        self._store, self._key, self._ids = store, key, list(video_ids)

    def __getitem__(self, video_id: str) -> Any:
        if video_id not in self._ids:
            raise KeyError(video_id)
        return self._store.load(self._key, video_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _datatype_key(context: dg.InputContext | dg.OutputContext) -> str:
    return context.asset_key.path[-1]


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Writes ``{video_id: value}`` outputs one file per video; loads inputs lazily."""

    storage: ArtifactStorage

    def handle_output(self, context: dg.OutputContext, obj: Mapping[str, Any]) -> None:
        key = _datatype_key(context)
        expected = set(context.asset_partition_keys)
        if not isinstance(obj, Mapping) or not set(obj) <= expected:
            raise TypeError(
                f"asset {key!r} must return {{video_id: value}} for its partitions "
                f"{sorted(expected)}, got {type(obj).__name__}"
            )
        store = self.storage.store()
        for video_id, value in obj.items():
            store.save_once(key, video_id, value)  # the per-video loop saves most itself
        # The step's handled-output event (the run's log); each video's own record is on its
        # partition (see dpl_assets.assets.batch).
        context.add_output_metadata({"folder": dg.MetadataValue.path(str(store.output_dir / key))})

    def load_input(self, context: dg.InputContext) -> LazyArtifacts:
        return LazyArtifacts(
            self.storage.store(), _datatype_key(context), context.asset_partition_keys
        )
