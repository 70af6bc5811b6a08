"""A new user's first contact: a quiet setup, a quiet face node, a light package import,
and errors that say what to do."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpl_assets.nodes import native_logs

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def run(args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        **kwargs,
    )  # fmt: skip


# -- setup --------------------------------------------------------------------------------


def test_a_second_setup_installs_nothing_and_prints_no_warnings():
    # CI ran setup before the tests, so the first call here is already a second one; a
    # developer who changed pyproject.toml since gets the install here, then the check.
    first = run(["bash", str(REPO / "scripts" / "setup.sh")])
    assert first.returncode == 0, first.stdout + first.stderr
    for output in (first.stdout, first.stderr):
        assert "Warning" not in output and "deprecated" not in output.lower(), output
    second = run(["bash", str(REPO / "scripts" / "setup.sh")], timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout == "setup: ready (.venv), nothing to install\n"
    assert second.stderr == ""


def test_the_licence_is_declared_the_modern_way_and_shipped():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    metadata = importlib.metadata.metadata("dpl-assets")
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in (metadata.get_all("License-File") or [])


def test_setup_installs_the_browser_only_for_the_tests():
    script = (REPO / "scripts" / "setup.sh").read_text()
    assert 'if [ "$tests" -eq 1 ]; then\n  packages+=(chromium chromium-driver)' in script
    assert "bash scripts/setup.sh --tests" in (REPO / "scripts" / "test.sh").read_text()
    assert "bash scripts/setup.sh\n" in (REPO / "scripts" / "demo.sh").read_text()


# -- mediapipe's C++ start-up lines --------------------------------------------------------

FACE_SCRIPT = textwrap.dedent(
    """
    import sys
    from dpl_assets.nodes.faces import FaceAnalyzer
    from dpl_assets.samples import face_frames

    frames = face_frames(0.4)
    print("python before", file=sys.stderr, flush=True)
    # Two models, as two worker threads of the face node have.
    with FaceAnalyzer() as first, FaceAnalyzer() as second:
        found = int(first.analyze(iter(frames)).detected.sum())
        found += int(second.analyze(iter(frames)).detected.sum())
        print("python during", file=sys.stderr, flush=True)
    print("python after", file=sys.stderr, flush=True)
    print(found)
    """
)


def test_the_face_node_prints_no_mediapipe_start_up_lines():
    result = run([sys.executable, "-c", FACE_SCRIPT], timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 0  # faces found: the mesh's warnings would fire
    assert result.stderr == "python before\npython during\npython after\n", result.stderr


@pytest.mark.parametrize(
    ("line", "noise"),
    [
        (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", True),
        (b"WARNING: All log messages before absl::InitializeLog() is called are written to"
         b" STDERR", True),
        (b"W0000 00:00:1795961933.414061     323 inference_feedback_manager.cc:114] Feedback "
         b"manager requires a model with a single signature inference.", True),
        (b"W0000 00:00:1795961933.532245     322 landmark_projection_calculator.cc:186] Using "
         b"NORM_RECT without IMAGE_DIMENSIONS is only supported for the square ROI.", True),
        (b"E0000 00:00:1795961933.532245     322 inference_calculator.cc:99] real error", False),
        (b"W0000 00:00:1795961933.532245     322 gpu_service.cc:12] another warning", False),
        (b"Traceback (most recent call last):", False),
        (b"2026-11-29 14:18:51 +0000 - dagster - WARNING - dpl_run - rejected", False),
    ],
)  # fmt: skip
def test_only_the_known_start_up_lines_are_dropped(line, noise):
    assert native_logs.is_noise(line) is noise


def test_everything_else_written_to_stderr_passes_in_order(capfd):
    with native_logs.quiet_native_logs():
        os.write(2, b"W0000 00:00:1.0     1 inference_feedback_manager.cc:114] Feedback\n")
        os.write(2, b"kept 1\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"kept 2\n")
        os.write(2, b"\rprogress 10%")  # a partial line goes out without waiting
    assert capfd.readouterr().err == "kept 1\nkept 2\n\rprogress 10%"
