"""plan_segments: kept segments and dropped spans from exclusion flags and scene cuts,
against spans worked out by hand (25 fps unless said)."""

from __future__ import annotations

import numpy as np
import pytest

from dpl_assets.media.timeline import frames_in_spans, true_runs
from dpl_assets.nodes.segments import (
    LOW_QUALITY,
    NO_FACE,
    NO_SPEECH,
    TOO_SHORT,
    frame_durations,
    plan_segments,
    segment_ids,
)


def _times(count: int, fps: float = 25.0) -> np.ndarray:
    return np.arange(count) / fps


def _mask(count: int, *spans: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(count, bool)
    for start, end in spans:
        mask[start:end] = True
    return mask


def test_spans_reasons_cuts_and_splits():
    n = 300  # 12 s
    plan = plan_segments(
        _times(n),
        {NO_FACE: _mask(n, (50, 75)), NO_SPEECH: _mask(n, (150, 200))},
        cuts=[100],
        min_seconds=1.0,
        max_seconds=3.0,
    )
    # [0, 50) 2 s; [75, 100) 1 s (= min); cut at 100; [100, 150) 2 s; [200, 300) 4 s -> 2 x 2 s
    assert plan.kept.tolist() == [[0, 50], [75, 100], [100, 150], [200, 250], [250, 300]]
    assert plan.dropped == [
        {"start": 50, "end": 75, "reasons": [NO_FACE]},
        {"start": 150, "end": 200, "reasons": [NO_SPEECH]},
    ]
    assert plan.kept_s == pytest.approx(9.0)
    assert plan.dropped_s == pytest.approx({NO_FACE: 1.0, NO_SPEECH: 2.0})
    assert plan.cuts == [100]


def test_short_runs_are_dropped_and_overlapping_reasons_charged_once():
    n = 100  # 4 s
    face = _mask(n, (10, 40))
    quality = _mask(n, (30, 60))
    plan = plan_segments(
        _times(n), {LOW_QUALITY: quality, NO_FACE: face}, min_seconds=1.0, max_seconds=10.0
    )
    # usable: [0, 10) 0.4 s (too short), [60, 100) 1.6 s (kept)
    assert plan.kept.tolist() == [[60, 100]]
    assert plan.dropped == [
        {"start": 0, "end": 10, "reasons": [TOO_SHORT]},
        {"start": 10, "end": 30, "reasons": [NO_FACE]},
        {"start": 30, "end": 40, "reasons": [LOW_QUALITY, NO_FACE]},
        {"start": 40, "end": 60, "reasons": [LOW_QUALITY]},
    ]
    # frames 30-40 have both reasons and are charged to "no face" (first in REASON_ORDER)
    assert plan.dropped_s == pytest.approx({TOO_SHORT: 0.4, NO_FACE: 1.2, LOW_QUALITY: 0.8})
    total = plan.kept_s + sum(plan.dropped_s.values())
    assert total == pytest.approx(4.0)


def test_long_runs_split_evenly_within_max():
    plan = plan_segments(_times(25 * 25), {}, min_seconds=1.0, max_seconds=10.0)  # 25 s
    lengths = np.diff(plan.kept, axis=1).ravel() / 25
    assert lengths.tolist() == pytest.approx([25 / 3] * 3, abs=0.04)
    assert plan.kept[0, 0] == 0 and plan.kept[-1, 1] == 625
    assert (plan.kept[1:, 0] == plan.kept[:-1, 1]).all()


def test_min_above_half_max_keeps_whole_pieces_and_drops_the_rest():
    # 10.5 s with min 6, max 10: equal halves (5.25 s) would be too short.
    plan = plan_segments(_times(int(10.5 * 25)), {}, min_seconds=6.0, max_seconds=10.0)
    assert plan.kept.tolist() == [[0, 250]]
    assert plan.dropped == [{"start": 250, "end": 262, "reasons": [TOO_SHORT]}]


def test_variable_frame_rate_is_measured_by_timestamps():
    # 1 s at 50 fps then 1 s at 10 fps: 60 frames, 2 s.
    times = np.concatenate([np.arange(50) / 50, 1 + np.arange(10) / 10])
    assert frame_durations(times).sum() == pytest.approx(2.0)
    plan = plan_segments(times, {NO_FACE: _mask(60, (0, 50))}, min_seconds=0.5, max_seconds=5)
    assert plan.kept.tolist() == [[50, 60]]
    assert plan.kept_s == pytest.approx(1.0)
    assert plan.dropped_s == pytest.approx({NO_FACE: 1.0})


def test_segment_ids_and_span_masks():
    ids = segment_ids(np.array([[2, 4], [4, 6], [8, 9]]), 10)
    assert ids.tolist() == [-1, -1, 0, 0, 1, 1, -1, -1, 2, -1]
    mask = frames_in_spans(_times(10, 10.0), [(0.1, 0.2), (0.35, 1.0)])
    assert mask.tolist() == [False, True, False, False, True, True, True, True, True, True]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="mask has shape"):
        plan_segments(_times(10), {NO_FACE: np.zeros(9, bool)})
    with pytest.raises(ValueError, match="outside"):
        plan_segments(_times(10), {}, cuts=[11])
    with pytest.raises(ValueError, match="min_seconds"):
        plan_segments(_times(10), {}, min_seconds=5, max_seconds=2)
    with pytest.raises(ValueError, match="increase"):
        plan_segments(np.array([0.0, 0.1, 0.1]), {})


def test_a_graph_with_max_below_min_fails_before_any_work(tmp_path, capsys):
    import json

    from dpl_assets import cli
    from dpl_assets.assets.segments import SegmentConfig

    with pytest.raises(ValueError, match=r"max_seconds \(2.0\) is below min_seconds \(5.0\)"):
        SegmentConfig(min_seconds=5.0, max_seconds=2.0)
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps([{"name": "SegmentNode", "params": {"max_seconds": 0.5}}]))
    (tmp_path / "videos").mkdir()
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    code = cli.main(["run", "--graph", str(graph), "--inputs", str(tmp_path / "inputs.json"),
                     "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert code != 0
    assert "max_seconds (0.5) is below min_seconds (1.0)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "segments").exists()


@pytest.mark.parametrize(
    ("mask", "starts", "ends"),
    [
        ([], [], []),
        ([False, False], [], []),
        ([True], [0], [1]),
        ([True, True, False, True, False, False, True, True], [0, 3, 6], [2, 4, 8]),
    ],
)
def test_true_runs_are_the_half_open_runs_of_true(mask, starts, ends):
    got_starts, got_ends = true_runs(np.asarray(mask, bool))
    assert got_starts.tolist() == starts and got_ends.tolist() == ends
    rebuilt = np.zeros(len(mask), bool)
    for start, end in zip(got_starts, got_ends, strict=True):
        rebuilt[start:end] = True
    assert rebuilt.tolist() == list(mask)
