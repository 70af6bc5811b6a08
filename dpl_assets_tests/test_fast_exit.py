"""Ending a finished process without the interpreter's teardown (dpl_assets.fast_exit)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys
from pathlib import Path
import dpl_assets  # installs the handler before any library registers its own
from dpl_assets import fast_exit

marks = Path(sys.argv[1])

class Teardown:
    def __del__(self):  # runs only in the interpreter's teardown (a module global)
        (marks / "teardown").write_text("ran")

kept = Teardown()
atexit.register(lambda: (marks / "later_handler").write_text("ran"))
sys.stdout.write("last words")  # no newline, never flushed by the script
if sys.argv[2] != "none":
    fast_exit.set_status(int(sys.argv[2]))
if sys.argv[3] == "raise":
    raise RuntimeError("escaped")
sys.exit(5)
"""


def _run(tmp_path: Path, status: str, ending: str = "exit") -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), status, ending],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_recorded_status_ends_the_process_after_later_handlers_without_teardown(tmp_path):
    done = _run(tmp_path, "3")
    assert done.returncode == 3  # the recorded status, not sys.exit's 5
    assert done.stdout == "last words"  # flushed before leaving
    assert (tmp_path / "later_handler").read_text() == "ran"  # libraries' handlers still run
    assert not (tmp_path / "teardown").exists()  # the teardown was skipped


def test_without_a_status_the_process_exits_as_usual(tmp_path):
    done = _run(tmp_path, "none")
    assert done.returncode == 5
    assert done.stdout == "last words"
    assert (tmp_path / "later_handler").read_text() == "ran"
    assert (tmp_path / "teardown").read_text() == "ran"


def test_an_escaping_exception_keeps_its_traceback_status_1_and_the_usual_exit(tmp_path):
    done = _run(tmp_path, "0", ending="raise")  # a status recorded, then a crash
    assert done.returncode == 1
    assert "RuntimeError: escaped" in done.stderr
    assert (tmp_path / "teardown").read_text() == "ran"
