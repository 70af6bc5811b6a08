"""``dpl run`` with nothing new skips listing the instance's partitions while they are the
registered videos (:mod:`dpl_assets.partition_stamp`), and still re-adds a partition deleted
by hand, and still cuts pending videos into ranges of the instance's real order.
References: the instance's partitions, read through Dagster's API, and the files written."""

from __future__ import annotations

import contextlib
from pathlib import Path

import dagster as dg
import pytest

from dpl_assets import runner
from dpl_assets.partition_stamp import partitions_summary
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets_tests import media_factory as media
from dpl_assets_tests import servers
from dpl_assets_tests.dpl_runs import run_graph
from dpl_assets_tests.test_pipeline import instance_for

GRAPH = [{"name": "VideoToWavNode", "params": {}}]


class Listings:
    """Counts ``dpl run``'s listings of the instance's partition keys."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        listing = runner._partitions

        def counted(instance: dg.DagsterInstance) -> list[str]:
            self.count += 1
            return listing(instance)

        monkeypatch.setattr(runner, "_partitions", counted)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def partitions(out: Path) -> list[str]:
    return list(instance_for(out).get_dynamic_partitions(VIDEOS_PARTITION_NAME))


def test_a_no_op_run_lists_no_partition_and_a_deleted_one_comes_back(tmp_path, monkeypatch):
    videos, out = tmp_path / "videos", tmp_path / "out"
    for name in ("a", "b", "c"):
        media.make_talking_clip(videos / f"{name}.mp4", seconds=0.5)
    listings = Listings(monkeypatch)
    assert set(run_graph(tmp_path, GRAPH, videos)) == {"a", "b", "c"}
    assert partitions(out) == ["a", "b", "c"] and listings.take() == 1
    run_graph(tmp_path, GRAPH, videos)  # nothing missing: recorded
    assert listings.take() == 1
    run_graph(tmp_path, GRAPH, videos)  # the record holds: no listing
    assert listings.take() == 0

    instance_for(out).delete_dynamic_partition(VIDEOS_PARTITION_NAME, "b")  # by hand, the UI
    listings.take()
    report = run_graph(tmp_path, GRAPH, videos)
    assert listings.take() == 1 and sorted(partitions(out)) == ["a", "b", "c"]
    assert report["b"]["status"] == "processed"
    run_graph(tmp_path, GRAPH, videos)
    assert listings.take() == 1  # re-added last run: recorded now
    run_graph(tmp_path, GRAPH, videos)
    assert listings.take() == 0

    # the last partition deleted, another key added by hand: SQLite may reuse its row id
    instance = instance_for(out)
    before = partitions_summary(instance)
    instance.delete_dynamic_partition(VIDEOS_PARTITION_NAME, "b")
    instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, ["zz"])
    assert partitions_summary(instance) != before
    listings.take()
    run_graph(tmp_path, GRAPH, videos)
    assert listings.take() == 1 and "b" in partitions(out)

    # a pending video with the record in step: the order is listed to cut the ranges
    run_graph(tmp_path, GRAPH, videos)
    listings.take()
    wav = out / "wav" / "c.wav"
    wav.unlink()
    report = run_graph(tmp_path, GRAPH, videos)
    assert listings.take() == 1 and wav.exists() and report["c"]["status"] == "processed"


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_the_summary_changes_with_any_key_added_or_deleted(tmp_path, storage):
    """On Dagster's SQLite and PostgreSQL storage: the reference is the key list itself."""
    with contextlib.ExitStack() as stack:
        config = "telemetry:\n  enabled: false\n"
        if storage == "postgres":
            server = stack.enter_context(servers.postgres())
            url = f"postgresql+psycopg2://dagster@127.0.0.1:{server.port}/dagster"
            config += f"storage:\n  postgres:\n    postgres_url: {url}\n"
        (tmp_path / "dagster.yaml").write_text(config)
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(tmp_path)))
        seen: dict[str, list[str]] = {}

        def summary_is_new() -> bool:
            summary = partitions_summary(instance)
            assert summary is not None
            keys = list(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))
            new = str(summary) not in seen
            seen[str(summary)] = keys
            return new

        assert summary_is_new()
        instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, ["a", "b", "c"])
        assert summary_is_new() and not summary_is_new()  # unchanged: the same summary
        for delete, add in (("c", "d"), ("d", "dd"), ("a", None), (None, "a")):
            if delete:
                instance.delete_dynamic_partition(VIDEOS_PARTITION_NAME, delete)
            if add:
                instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, [add])
            assert summary_is_new()
