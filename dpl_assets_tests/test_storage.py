"""Storage: atomic writes, datatype contracts, status records, refusing pickles."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile

from dpl_assets.catalog import Catalog
from dpl_assets.discovery import parse_inputs
from dpl_assets.outcomes import Kept, Rejected
from dpl_assets.storage.formats import ContractError
from dpl_assets.storage.image_codec import decode_image, encode_image
from dpl_assets.storage.image_stack import ImageStack, ImageStackWriter
from dpl_assets.storage.store import ArtifactStore, MissingArtifactError
from dpl_assets.storage.vlen_images import VlenImageReader, VlenImageWriter


@pytest.fixture
def store(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes(b"not decoded by these tests")
    Catalog(tmp_path / "out").register(parse_inputs({"video": str(videos)}))
    return ArtifactStore(tmp_path / "out")


def test_a_write_killed_midway_leaves_no_file_under_the_final_name(store, monkeypatch):
    path = store.artifact_path("volume", "clip")

    def dies_after_partial_write(file, array, allow_pickle):
        file.write(b"\x93NUMPY partial")  # the store hands np.save an open file
        file.flush()
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(np, "save", dies_after_partial_write)
    with pytest.raises(KeyboardInterrupt):
        store.save("volume", "clip", np.zeros(10, np.float32))
    assert not path.exists()
    assert not store.is_done("volume", "clip")
    assert list(path.parent.iterdir()) == []  # the temp file is gone too


def test_arrays_are_checked_against_the_datatype_contract(store):
    with pytest.raises(ContractError, match="dtype float64"):
        store.save("volume", "clip", np.zeros(10))
    with pytest.raises(ContractError, match="shape"):
        store.save("wav2vec", "clip", np.zeros(10, np.float32))
    store.save("wav2vec", "clip", np.ones((7, 3), np.float32))
    np.testing.assert_array_equal(np.load(store.artifact_path("wav2vec", "clip")), np.ones((7, 3)))


def test_wav_is_16k_mono_pcm16(store):
    samples = (np.arange(1600, dtype=np.float32) % 200 - 100) / 128
    store.save("wav", "clip", samples)
    info = soundfile.info(store.artifact_path("wav", "clip"))
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    back = store.load("wav", "clip")
    np.testing.assert_allclose(back, samples, atol=1 / 32768)


def test_rejection_replaces_artefact_and_counts_as_done(store):
    store.save("volume", "clip", np.zeros(4, np.float32))
    store.record_failure("volume", "clip", "earlier crash")
    store.save("volume", "clip", Rejected("clip.mp4: no audio stream", origin="wav"))
    assert not store.artifact_path("volume", "clip").exists()
    assert store.is_done("volume", "clip")
    assert store.failure("volume", "clip") is None
    assert store.load("volume", "clip") == Rejected("clip.mp4: no audio stream", "wav")
    assert store.clear_rejections("clip") == ["volume"]
    assert not store.is_done("volume", "clip")


def test_kept_writes_nothing(store):
    store.save("volume", "clip", Kept())
    assert not store.artifact_path("volume", "clip").exists()


def test_missing_input_names_the_way_out(store):
    with pytest.raises(MissingArtifactError, match=r"materialize 'wav'.*give a 'wav' root"):
        store.load("wav", "clip")


def test_user_npy_with_pickled_objects_is_refused(tmp_path):
    videos, features = tmp_path / "videos", tmp_path / "features"
    videos.mkdir()
    features.mkdir()
    (videos / "clip.mp4").write_bytes(b"x")
    np.save(features / "clip.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    Catalog(tmp_path / "out").register(
        parse_inputs({"video": str(videos), "wav2vec": str(features)})
    )
    with pytest.raises(ValueError, match="pickle"):
        ArtifactStore(tmp_path / "out").load("wav2vec", "clip")


def test_catalog_keeps_the_sources(store):
    data = Catalog(store.output_dir).snapshot()
    assert data["videos"]["clip"]["sources"]["video"].endswith("clip.mp4")


# --------------------------------------------------------------------------------------
# Staged files of dead writers (killed runs) are removed; a live writer's never are
# --------------------------------------------------------------------------------------

_STAGER = """
import sys, time
from dpl_assets.storage.store import ArtifactStore
path = ArtifactStore(sys.argv[1]).staging_path("images", "clip")
path.write_bytes(b"half a stack")
print(path, flush=True)
time.sleep(600)
"""


def _start_stager(out):
    """A real process that stages a file and stays alive; returns (process, staged path)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _STAGER, str(out)], stdout=subprocess.PIPE, text=True
    )
    return process, Path(process.stdout.readline().strip())


def test_staged_files_of_a_killed_writer_are_removed_and_a_live_writers_kept(store):
    live, live_file = _start_stager(store.output_dir)
    doomed, doomed_file = _start_stager(store.output_dir)
    try:
        assert live_file.exists() and doomed_file.exists()
        assert f".{live.pid}-" in live_file.name  # the name says which process wrote it
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        assert store.remove_dead_staging() == [doomed_file]
        assert live_file.exists()
        assert store.remove_dead_staging(["images"]) == []
    finally:
        live.kill()
        live.wait()
    assert store.remove_dead_staging(["images"]) == [live_file]
    assert [p for p in (store.output_dir / "_staging").rglob("*") if p.is_file()] == []


def test_a_reused_pid_does_not_keep_a_dead_writers_files(store):
    """A staged name with a pid that is alive now (ours) but a token nobody holds: the
    process that wrote it is gone (its pid was given to another process), so it goes."""
    ours = store.staging_path("images", "clip")  # our own token: we are alive
    ours.write_bytes(b"ours")
    stale = ours.with_name(f"other.{os.getpid()}-0badf00d.h5")
    stale.write_bytes(b"left by an earlier process with our pid")
    assert store.remove_dead_staging() == [stale]
    assert ours.exists()
    ours.unlink()


# --- image stacks: the vlen layout's one writer and reader ----------------------------


def _frames(count, height=12, width=20):
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_an_image_stack_reads_back_its_exact_bytes_and_timestamps(tmp_path, image_format):
    """More frames than one resize step (256) and one read block (64): every entry is the
    encoder's bytes for its frame, every timestamp exact, iteration equals indexing."""
    frames = _frames(300)
    times = np.cumsum(np.r_[0.1, np.full(299, 0.04)]) + np.arange(300) * 1e-6
    path = tmp_path / "images" / "clip.h5"
    path.parent.mkdir()
    with ImageStackWriter(path, "images", image_format=image_format, quality=90) as out:
        out.attrs["source"] = "test"
        for frame, time_s in zip(frames, times, strict=True):
            out.append(frame, time_s)
    with ImageStack(path) as stack:  # key from the directory name
        assert len(stack) == 300
        assert np.array_equal(stack.timestamps, times)
        expected = [encode_image(frame, image_format, 90) for frame in frames]
        assert [stack.encoded(i) for i in range(300)] == expected
        decoded = list(stack)
        assert all(np.array_equal(a, stack[i]) for i, a in enumerate(decoded))
        assert all(np.array_equal(a, decode_image(b)) for a, b in zip(decoded, expected))
        if image_format == "png":
            assert all(np.array_equal(a, f) for a, f in zip(decoded, frames, strict=True))
        assert {k: stack.attrs[k] for k in ("format", "quality", "width", "height", "count")} == {
            "format": image_format, "quality": 90, "width": 20, "height": 12, "count": 300
        }  # fmt: skip
        assert stack.attrs["fps"] == pytest.approx(1 / 0.040001)
        assert stack.attrs["source"] == "test"
    with h5py.File(path, "r") as f:
        assert h5py.check_vlen_dtype(f["images"].dtype) == np.dtype(np.uint8)
        assert (f["images"].chunks, f["images"].maxshape) == ((64,), (None,))
        assert (f["timestamps"].dtype, f["timestamps"].chunks) == (np.float64, (1024,))


def test_an_image_stack_refuses_frames_of_another_size_and_leaves_no_file(tmp_path):
    path = tmp_path / "crops.h5"
    first = _frames(1)[0]
    wrong_size = r"frame 1 is \(8, 8\), the stack is \(12, 20\)"
    with pytest.raises(ValueError, match=wrong_size), ImageStackWriter(path, "crops") as out:
        out.append(first, 0.0)
        out.append(np.zeros((8, 8, 3), np.uint8), 0.04)
    assert not path.exists()
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"), ImageStackWriter(path, "c") as out:
        out.append(np.zeros((8, 8), np.uint8), 0.0)
    assert not path.exists()


def test_vlen_entries_are_stored_as_given_and_checked_against_the_frame_shape(tmp_path):
    encoded = [encode_image(frame) for frame in _frames(70)]
    with h5py.File(tmp_path / "v.h5", "w") as f:
        writer = VlenImageWriter(f, "crops")
        for index, data in enumerate(encoded):  # bytes and 1-D uint8 arrays alike
            writer.append(data if index % 2 else np.frombuffer(data, np.uint8))
        assert writer.finish().shape == (70,) and writer.count == 70
        reader = VlenImageReader(f["crops"], (12, 20, 3))
        assert list(reader.iter_encoded()) == encoded
        assert list(reader.iter_encoded(65, 100)) == encoded[65:]
        assert np.array_equal(reader[3], decode_image(encoded[3]))
        assert [frame.shape for frame in reader.frames(60, 70)] == [(12, 20, 3)] * 10
        with pytest.raises(ValueError, match=r"frame 2 of /crops decodes to .*, not \(12, 21\)"):
            next(VlenImageReader(f["crops"], (12, 21)).frames(2))  # grey, one column more
        with pytest.raises(ValueError, match=r"frame 0 of /crops decodes to \(12, 20, 3\)"):
            VlenImageReader(f["crops"], (20, 12, 3))[0]
        assert VlenImageReader(f["crops"], (12, 20))[0].shape == (12, 20)  # decoded grey


@pytest.mark.parametrize("count", [1, 64, 65, 129])
def test_vlen_entries_written_in_blocks_keep_their_order_and_bytes(tmp_path, count):
    """Entries of one length (numpy would make them one 2-D block) and counts around the
    64-entry write block, with one left over: every entry back byte for byte, in order."""
    entries = [np.full(10, index % 251, np.uint8) for index in range(count)]
    with h5py.File(tmp_path / "v.h5", "w") as f:
        writer = VlenImageWriter(f, "crops")
        for entry in entries:
            writer.append(entry)
        dset = writer.finish()
        assert dset.shape == (count,)
        assert [dset[i].tobytes() for i in range(count)] == [e.tobytes() for e in entries]


def test_a_datatype_whose_extension_is_not_its_formats_is_refused_at_registration():
    from dpl_assets.datatypes import ArrayContract, Datatype, StorageFormat, register_datatype

    npz = Datatype(
        "speaker_npz", StorageFormat.NPY, (".npz",), "x", ArrayContract(("N",), "float32")
    )
    with pytest.raises(ValueError, match=r"npy files are written as \.npy, not \.npz"):
        register_datatype(npz)


def test_an_image_stack_staged_under_another_dataset_name_is_not_saved(tmp_path):
    store = ArtifactStore(tmp_path)
    staged = store.staging_path("crops", "v")
    with ImageStackWriter(staged, "thumbs") as writer:  # the key is "crops"
        writer.append(np.zeros((8, 8, 3), np.uint8), 0.0)
    from dpl_assets.outcomes import StagedFile

    with pytest.raises(ValueError, match=r"has no dataset 'crops' \(it has thumbs, timestamps\)"):
        store.save("crops", "v", StagedFile(staged))
    assert not store.artifact_path("crops", "v").exists()


def test_arrays_are_written_under_exactly_the_final_name(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save("volume", "v", np.arange(3, dtype=np.float32))
    assert sorted(p.name for p in (tmp_path / "volume").iterdir()) == ["v.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "volume" / "v.npy"), [0, 1, 2])


def test_a_rejected_video_still_reports_the_steps_that_failed_on_it(store):
    from dpl_assets.report import video_report

    store.save("wav", "clip", Rejected("clip.mp4: no audio stream", origin="wav"))
    store.record_failure("images", "clip", "RuntimeError: decoder crashed")
    report = video_report(store, "clip", ["wav", "images"])
    assert report.status == "rejected" and report.reasons == ["clip.mp4: no audio stream"]
    assert report.failed_outputs == {"images": "RuntimeError: decoder crashed"}
