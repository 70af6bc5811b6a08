"""Shared pytest fixtures: test media built once per session, a scratch media folder, and
SIGTERM as each test found it."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpl_assets_tests import media_factory
from dpl_assets_tests.media_factory import SampleMedia

# `dpl run` (in process and in subprocesses) runs everything in one process unless a test
# asks for workers: the tests of nodes count model loads and runs in that process.
# dpl_assets_tests/test_run_pool.py tests the worker processes.
os.environ.setdefault("DPL_WORKERS", "1")
# The free space dpl keeps (dpl_assets/storage/disk_room.py; 512 MB for users): the tests
# write little, and a CI machine's small temp disk must not fail them all.
os.environ.setdefault("DPL_MIN_FREE_MB", "64")


@pytest.fixture(autouse=True)
def _sigterm_as_before_each_test() -> Iterator[None]:
    """Each test leaves SIGTERM as it found it. Dagster's in-process runs leave SIGTERM as
    SIGINT is (see :func:`dpl_assets.interrupts.sigterm_kept`): under a test runner started
    with SIGINT ignored (a script's background job), a test calling ``dg.materialize``
    left SIGTERM ignored, and later tests' runs started Dagster's log tailers that way
    (each step then waited 2 x 30 s for them)."""
    from dpl_assets import interrupts  # imports Dagster: not at collection

    with interrupts.sigterm_kept():
        yield


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory: pytest.TempPathFactory) -> SampleMedia:
    """One file of each kind of test media (good clips and bad inputs), built once.

    Shared by every test of the session: treat the files as read-only; a test that needs
    to modify or rename media should make its own in ``media_dir``.
    """
    return media_factory.build_sample_media(tmp_path_factory.mktemp("sample_media"))


@pytest.fixture(scope="session")
def sample_media_dir(sample_media: SampleMedia) -> Path:
    """The folder that holds :func:`sample_media`'s files (read-only, see there)."""
    return sample_media.folder


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    """An empty folder of this test's own, to build media into with ``media_factory``."""
    folder = tmp_path / "media"
    folder.mkdir()
    return folder
