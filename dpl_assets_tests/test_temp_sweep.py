"""The temp-file sweep that lists only changed folders removes exactly what a full walk
(:func:`dpl_assets.storage.atomic.remove_dead_temps`, the reference) would: dead writers'
temp files, in new and in unchanged folders, never a live writer's."""

from __future__ import annotations

import subprocess
import time

from dpl_assets import temp_sweep
from dpl_assets.storage.atomic import TEMP_PREFIX
from dpl_assets.temp_sweep import sweep_dead_temps


def dead_pid() -> int:
    """The id of a process that has ended (started and waited for here)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_dead_writers_temps_go_live_ones_stay_unchanged_folders_are_not_listed(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    (out / "wav").mkdir(parents=True)
    (out / "_status" / "wav").mkdir(parents=True)
    (out / "wav" / "a.wav").write_bytes(b"kept")
    dead = out / "_status" / "wav" / f"{TEMP_PREFIX}{dead_pid()}-x.json"
    dead.write_text("{}")
    assert sweep_dead_temps(out) == [dead] and (out / "wav" / "a.wav").exists()

    writer = subprocess.Popen(["sleep", "60"])  # a live writer's temp file
    try:
        live = out / "wav" / f"{TEMP_PREFIX}{writer.pid}-y.wav"
        live.write_bytes(b"being written")
        time.sleep(0.3)  # past the clock's granularity: the folders count as unchanged
        assert sweep_dead_temps(out) == [] and live.exists()
        time.sleep(0.3)
        sweep_dead_temps(out)
        time.sleep(0.3)
        listed = []
        entries = temp_sweep._entries
        monkeypatch.setattr(temp_sweep, "_entries", lambda f: listed.append(f) or entries(f))
        assert sweep_dead_temps(out) == []
        # only the folder that held a live writer's file, and _index (the state is written)
        assert sorted(set(listed)) == [out / "_index", out / "wav"]
        monkeypatch.undo()
    finally:
        writer.kill()  # ours, by its PID
        writer.wait()
    # The writer died: its folder did not change, yet it is listed again (it held a live
    # writer's file) and the file goes.
    assert sweep_dead_temps(out) == [live]

    time.sleep(0.3)
    sweep_dead_temps(out)
    new = out / "volume" / f"{TEMP_PREFIX}{dead_pid()}-z.npy"  # a new folder, a dead temp
    new.parent.mkdir()
    new.write_bytes(b"")
    assert sweep_dead_temps(out) == [new]
    (out / ".dagster").mkdir()
    skipped = out / ".dagster" / f"{TEMP_PREFIX}{dead_pid()}-q.db"
    skipped.write_bytes(b"")
    assert sweep_dead_temps(out) == [] and skipped.exists()  # never entered, as before
