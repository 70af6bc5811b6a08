"""The Dagster web UI in a real browser, on the instance a real ``dpl run`` left behind.

A tiny run (two 1 s clips and a film without audio, ``VideoToWavNode`` + ``VolumeNode``)
registers partitions and records per-video materializations, a rejection (an observation
with its reason) and asset check results in ``{out}/.dagster``. Then
``dagster-webserver`` serves ``workspace.yaml`` on a free loopback port, pointed at that
instance the way the README's "The Dagster way" says (``DAGSTER_HOME``, ``DPL_OUTPUT_DIR``),
and headless Debian Chromium (driven by Selenium through ``/usr/bin/chromedriver``) waits
for what a user should see: the assets in their group's lineage graph, the partitions of
the registered videos and their status (the rejected video missing, never materialized),
each partition's own record (a processed video's status, path and sample count; a rejected
video's reason), and the ``output_valid`` check's result.

The browser resolves no host but 127.0.0.1, so the test never touches the network.
Skipped only where ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing
(``scripts/setup.sh`` installs both).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import soundfile
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dpl_assets import cli
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests import media_factory as media

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO_ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ["clip one", "clip_two"]  # a space in a partition key, on purpose
REJECTED = "silent film"  # no audio stream: rejected by wav (and volume after it)
SERVER_START_TIMEOUT_S = 90
UI_TIMEOUT_S = 60

needs_browser = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"the web UI test needs {CHROMIUM} and {CHROMEDRIVER} "
    "(Debian packages chromium and chromium-driver; scripts/setup.sh installs them)",
)


# --------------------------------------------------------------------------------------
# A real run, a real webserver, a real browser
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("web_ui_run")
    videos = base / "videos"
    for name in VIDEOS:
        media.make_talking_clip(videos / f"{name}.mp4", seconds=1.0)
    media.make_video_only(videos / f"{REJECTED}.mp4")
    graph = base / "graph.json"
    graph.write_text(
        json.dumps([{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}])
    )
    inputs = base / "inputs.json"
    inputs.write_text(json.dumps({"video": str(videos)}))
    out = base / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)  # the instance goes to {out}/.dagster
        code = cli.main(
            ["run", "--graph", str(graph), "--inputs", str(inputs), "--output_dir", str(out)]
        )
    assert code == 0, (out / "report.json").read_text() if (out / "report.json").exists() else ""
    # As after a user dismissed it once: the "Join the Dagster community" dialog (an iframe
    # from dagster.io) would otherwise cover every page served on 127.0.0.1.
    nux = out / INSTANCE_SUBDIR / ".nux" / "nux.yaml"
    nux.parent.mkdir(parents=True, exist_ok=True)
    nux.write_text("seen: 1\n", encoding="utf-8")
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _loopback_unproxied(env: dict[str, str]) -> dict[str, str]:
    """``env`` with 127.0.0.1 and localhost in ``no_proxy``: an ``$http_proxy`` of the machine
    must not carry the test's loopback traffic (to the webserver, to chromedriver)."""
    hosts = [h for h in env.get("no_proxy", env.get("NO_PROXY", "")).split(",") if h.strip()]
    value = ",".join([*hosts, "127.0.0.1", "localhost"])
    return {**env, "no_proxy": value, "NO_PROXY": value}


def _log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:] if log.exists() else ""


STOP_GRACE_S = 30


def _default_sigint() -> None:
    """In the child before exec: SIGINT at its default. A test run started in the
    background (``&`` in a script) ignores SIGINT, the server would inherit that, and
    Dagster's servers, told to stop, forward SIGINT to their children and wait for them:
    they then keep running after SIGTERM (measured: >45 s for ``dagster dev``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_alive(group: int) -> bool:
    """Whether a process of the group is left (zombies do not count)."""
    listing = subprocess.run(
        ["ps", "-e", "-o", "pgid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    return any(
        line.split()[0] == str(group) and not line.split()[1].startswith("Z")
        for line in listing.splitlines()
    )


def _stop_group(process: subprocess.Popen) -> float:
    """Stop the process group this test started (the server and every child it started),
    by its PID: SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`; returns the seconds
    until the whole group was gone after SIGTERM (inf if SIGKILL was needed)."""
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(process.pid, signal.SIGTERM)
    while time.monotonic() - started < STOP_GRACE_S:
        process.poll()  # reap the leader
        if not _group_alive(process.pid):
            return time.monotonic() - started
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return float("inf")


@pytest.fixture(scope="module")
def webserver(output_dir, tmp_path_factory) -> Iterator[str]:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("web_ui_server") / "webserver.log"
    env = _loopback_unproxied(
        dict(
            os.environ,
            DAGSTER_HOME=str(output_dir / INSTANCE_SUBDIR),
            DPL_OUTPUT_DIR=str(output_dir),
        )
    )
    executable = Path(sys.executable).parent / "dagster-webserver"
    command = [str(executable), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole below
            preexec_fn=_default_sigint,
        )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no $http_proxy
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"dagster-webserver exited with {process.returncode}:\n{_log_tail(log)}",
                    pytrace=False,
                )
            try:
                with direct.open(f"{base_url}/server_info", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not answer {base_url}/server_info within "
                    f"{SERVER_START_TIMEOUT_S} s:\n{_log_tail(log)}",
                    pytrace=False,
                )
            time.sleep(0.5)
        yield base_url
    finally:
        stopped_in = _stop_group(process)
        assert stopped_in < STOP_GRACE_S, f"needed SIGKILL:\n{_log_tail(log)}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--no-proxy-server",
        "--window-size=1600,1200",
        # Loopback only: any other host fails to resolve, so nothing leaves the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}",
    ):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:  # Selenium reads no_proxy when connecting
        for name, value in _loopback_unproxied(dict(os.environ)).items():
            patch.setenv(name, value)
        # An explicit driver path: Selenium Manager never looks for (or downloads) a driver.
        driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
    try:
        driver.set_page_load_timeout(UI_TIMEOUT_S)
        yield driver
    finally:
        driver.quit()


# --------------------------------------------------------------------------------------
# Waiting for what the page shows
# --------------------------------------------------------------------------------------


def _page_text(driver: webdriver.Chrome) -> str:
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:
        return ""


def expect_page(
    driver: webdriver.Chrome,
    url: str,
    screenshot: Path,
    lines: Sequence[str] = (),
    fragments: Sequence[str] = (),
) -> str:
    """Open ``url`` and wait until the page shows every one of ``lines`` as a whole line
    of text (so ``wav`` is not found inside ``wav2vec``) and every one of ``fragments``
    anywhere. Saves a screenshot either way; on timeout fails with what is missing and the
    page's text."""
    driver.get(url)

    def missing() -> list[str]:
        text = _page_text(driver)
        shown = {line.strip() for line in text.splitlines()}
        return [f"line {w!r}" for w in lines if w not in shown] + [
            f"text {w!r}" for w in fragments if w not in text
        ]

    try:
        WebDriverWait(driver, UI_TIMEOUT_S, poll_frequency=0.5).until(lambda _: not missing())
        shown_in_time = True
    except TimeoutException:
        shown_in_time = False
    driver.save_screenshot(str(screenshot))
    if not shown_in_time:
        pytest.fail(
            f"{url} did not show {', '.join(missing())} within {UI_TIMEOUT_S} s "
            f"(screenshot: {screenshot}); page text:\n{_page_text(driver)[-5000:]}",
            pytrace=False,
        )
    return _page_text(driver)


# --------------------------------------------------------------------------------------
# What a user sees
# --------------------------------------------------------------------------------------


def _partition(key: str, video_id: str, view: str = "partitions") -> str:
    return f"/assets/{key}?view={view}&partition={urllib.parse.quote(video_id)}"


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines()}


@needs_browser
def test_asset_group_graph_lists_the_assets(webserver, browser, tmp_path):
    # The `audio` group's list (the global catalog at /assets is a virtual list that
    # renders only the rows in view, and the group's lineage graph, now with the face
    # assets that read the audio beside it, hides names when zoomed out).
    expect_page(
        browser,
        f"{webserver}/locations/dpl_assets/asset-groups/audio/list",
        tmp_path / "asset_group_audio.png",
        lines=["audio", "speech", "speech_spans", "volume", "wav", "wav2vec"],
        fragments=["3 partitions"],
    )


@needs_browser
def test_partitions_of_the_registered_videos_show_their_status(webserver, browser, tmp_path):
    expect_page(
        browser,
        f"{webserver}/assets/wav?view=partitions",
        tmp_path / "wav_partitions.png",
        lines=[*VIDEOS, REJECTED, "Materialized (2)", "Missing (1)", "Failed (0)"],
    )


@needs_browser
@pytest.mark.parametrize("key", ["wav", "volume"])
def test_a_rejected_video_is_missing_not_materialized(webserver, browser, tmp_path, key):
    """The Partitions tab's status filter: the rejected video is among the missing
    partitions only; the processed ones among the materialized only."""
    missing = expect_page(
        browser,
        f"{webserver}/assets/{key}?view=partitions&status=MISSING",
        tmp_path / f"{key}_missing.png",
        lines=["1 Partitions Selected", REJECTED],
    )
    assert not _lines(missing) & set(VIDEOS)
    materialized = expect_page(
        browser,
        f"{webserver}/assets/{key}?view=partitions&status=MATERIALIZED",
        tmp_path / f"{key}_materialized.png",
        lines=["2 Partitions Selected", *VIDEOS],
    )
    assert REJECTED not in _lines(materialized)


@needs_browser
def test_a_rejected_partition_shows_no_materialization_and_its_reason(
    webserver, browser, tmp_path, output_dir
):
    reason = json.loads((output_dir / "_status" / "wav" / f"{REJECTED}.rejected.json").read_text())[
        "reason"
    ]
    assert "no audio stream" in reason
    # Its partition on the Partitions tab: no "Materialized" badge, no materialization.
    page = expect_page(
        browser,
        f"{webserver}{_partition('wav', REJECTED)}",
        tmp_path / "wav_rejected_partition.png",
        lines=[REJECTED, "Latest materialization", "None", "View all historical events (1)"],
    )
    assert "Materialized" not in _lines(page)
    # Its events (the partition's event view): the rejection, with the reason.
    expect_page(
        browser,
        f"{webserver}{_partition('wav', REJECTED, view='events')}",
        tmp_path / "wav_rejected_events.png",
        lines=["status", "rejected", "reason", reason, "rejected_by", "wav"],
        fragments=[f"Partition {REJECTED} observed in run", f"{REJECTED}: rejected: {reason}"],
    )


@needs_browser
def test_a_materialized_partition_shows_its_own_record(webserver, browser, tmp_path, output_dir):
    for video_id in VIDEOS:
        path = output_dir / "wav" / f"{video_id}.wav"
        samples = soundfile.info(str(path)).frames
        page = expect_page(
            browser,
            f"{webserver}{_partition('wav', video_id)}",
            tmp_path / f"wav_partition_{video_id}.png",
            lines=[video_id, "Materialized", "Metadata", "status", "written", "path", str(path),
                   "samples", str(samples), "audio_s", "size_bytes"],
        )  # fmt: skip
        # That video's record, not the totals of the run's step.
        assert not _lines(page) & {"videos", "videos_written", "videos_rejected", "frames"}


@needs_browser
def test_latest_materialization_metadata_renders(webserver, browser, tmp_path, output_dir):
    expect_page(
        browser,
        f"{webserver}{_partition('wav', VIDEOS[1], view='events')}",
        tmp_path / "wav_events.png",
        lines=["Metadata", "status", "written", "path", str(output_dir / "wav" / "clip_two.wav")],
        fragments=["materialized in run"],
    )


@needs_browser
def test_asset_check_result_shows(webserver, browser, tmp_path):
    expect_page(
        browser,
        f"{webserver}/assets/volume?view=checks",
        tmp_path / "volume_checks.png",
        lines=["output_valid", "Passed"],
        fragments=["videos_checked", "videos_failed"],
    )


# --------------------------------------------------------------------------------------
# scripts/dagster_ui.sh: `dagster dev` started from the background, stopped by its PID
# --------------------------------------------------------------------------------------


def _sigint_ignored(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def test_dagster_dev_started_in_the_background_stops_on_sigterm(tmp_path):
    """As ``bash scripts/dagster_ui.sh start ... &`` from a script: SIGINT ignored in the
    caller. The script gives dagster dev SIGINT back, and ``stop`` ends its whole process
    group with SIGTERM (no SIGKILL needed)."""
    script = REPO_ROOT / "scripts" / "dagster_ui.sh"
    out = tmp_path / "out"
    port = _free_port()
    env = _loopback_unproxied({k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"})

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    started = subprocess.run(
        ["bash", str(script), "start", str(out), str(port)], env=env, capture_output=True,
        text=True, timeout=120, preexec_fn=ignore_sigint, check=True,
    )  # fmt: skip
    group = int((out / INSTANCE_SUBDIR / "dagster-dev.pid").read_text())
    log = out / INSTANCE_SUBDIR / "dagster-dev.log"
    try:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with direct.open(f"http://127.0.0.1:{port}/server_info", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{started.stdout}\n{_log_tail(log)}"
            time.sleep(0.5)
        time.sleep(3)  # the daemon and the code servers are up too
        assert os.getpgid(group) == group  # a process group of its own, led by that PID
        assert not _sigint_ignored(group)
    finally:
        began = time.monotonic()
        stopped = subprocess.run(
            ["bash", str(script), "stop", str(out)], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        took = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stderr
    assert "SIGKILL" not in stopped.stderr, (stopped.stderr, _log_tail(log))
    assert not _group_alive(group)
    assert took < 20
    assert not (out / INSTANCE_SUBDIR / "dagster-dev.pid").exists()
