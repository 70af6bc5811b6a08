"""PackedWindows: windows of packed videos for PyTorch, checked against h5py reads."""

import cv2
import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dpl_assets.packing.dataset_pack import DatasetPack
from dpl_assets.packing.reader import PackedWindows
from dpl_assets.packing.resample import feature_times
from dpl_assets.packing.video_pack import PackOptions, pack_video
from dpl_assets.storage.image_stack import ImageStackWriter

WINDOW, STRIDE = 8, 4
LENGTHS = {"speaker/a": 20, "short one": 7, "ünï": 33}  # 7 < WINDOW: no window
KEYS = ["crops", "landmarks", "bboxes", "wav2vec", "timestamps"]


def frame(index: int, size: int = 24) -> np.ndarray:
    """A smooth RGB frame that changes with ``index``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    rgb = np.stack([x * 8 + index * 3, y * 8, (x + y) * 4 + index * 5], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_pack(folder, video_id, count, layout):
    stack = folder / "stacks" / f"{count}-crops.h5"
    with ImageStackWriter(stack, "crops") as writer:
        for i in range(count):
            writer.append(frame(i), i / 25)
    rng = np.random.default_rng(count)
    path = folder / f"{count}.h5"
    steps = feature_times(2 * count + 1)
    pack_video(
        path, video_id=video_id, frame_times=np.arange(count) / 25.0,
        image_stacks={"crops": stack},
        arrays={
            "landmarks": rng.normal(size=(count, 68, 2)).astype(np.float32),
            "bboxes": rng.integers(0, 500, (count, 4)),
        },
        audio_features={"wav2vec": rng.normal(size=(steps.size, 6)).astype(np.float32)},
        options=PackOptions(layout=layout),
    )  # fmt: skip
    return path


@pytest.fixture(params=["vlen", "filter32019"])
def packs(request, tmp_path):
    folder = tmp_path / "packs"
    return {
        video_id: make_pack(folder, video_id, count, request.param)
        for video_id, count in LENGTHS.items()
    }


def expected_starts():
    return {
        (video_id, start)
        for video_id, count in LENGTHS.items()
        for start in range(0, count - WINDOW + 1, STRIDE)
    }


def read_directly(path, start):
    """The window read with h5py and cv2 only (no packing code)."""
    with h5py.File(path, "r") as f:
        crops = f["crops"]
        images = []
        for i in range(start, start + WINDOW):
            if crops.dtype == np.uint8:  # filter32019: each chunk is one JPEG
                data = crops.id.read_direct_chunk((i, 0, 0, 0))[1]
            else:
                data = crops[i].tobytes()
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        window = {"crops": np.stack(images)}
        for key in KEYS[1:]:
            window[key] = f[key][start : start + WINDOW]
    return window


def test_windows_equal_direct_h5py_slices(packs):
    dataset = PackedWindows(list(packs.values()), window=WINDOW, stride=STRIDE, keys=KEYS)
    assert len(dataset) == (20 - 8) // 4 + 1 + 0 + (33 - 8) // 4 + 1 == 11
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        seen.add((item["video_id"], item["start"]))
        direct = read_directly(packs[item["video_id"]], item["start"])
        assert item["crops"].dtype == torch.uint8 and item["crops"].shape == (WINDOW, 24, 24, 3)
        assert np.array_equal(item["crops"].numpy(), direct["crops"])
        for key in ("landmarks", "bboxes", "wav2vec"):
            assert item[key].dtype == torch.float32 and item[key].shape[0] == WINDOW
            assert np.array_equal(item[key].numpy(), direct[key].astype(np.float32))
        assert item["timestamps"].dtype == torch.float64
        assert np.array_equal(item["timestamps"].numpy(), direct["timestamps"])
    assert seen == expected_starts()


def test_window_at_reads_any_start_of_any_video(packs):
    dataset = PackedWindows(packs["ünï"], window=WINDOW, keys=["crops", "wav2vec"])
    assert dataset.video_ids == ["ünï"] and len(dataset) == 33 // 8
    item = dataset.window_at("ünï", 25)  # not a multiple of the stride; the last possible
    direct = read_directly(packs["ünï"], 25)
    assert np.array_equal(item["crops"].numpy(), direct["crops"])
    assert np.array_equal(item["wav2vec"].numpy(), direct["wav2vec"])
    with pytest.raises(IndexError):
        dataset.window_at("ünï", 26)
    with pytest.raises(KeyError):
        dataset.window_at("nobody", 0)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_default_keys_are_the_datasets_every_video_has(packs):
    dataset = PackedWindows(packs["speaker/a"].parent, window=WINDOW)
    assert set(dataset.keys) == {
        "crops",
        "landmarks",
        "bboxes",
        "wav2vec",
        "timestamps",
        "audio_mask",
    }
    assert len(dataset) == 2 + 0 + 4  # stride = window


def test_missing_keys_and_inconsistent_lengths_are_refused(packs, tmp_path):
    with pytest.raises(ValueError, match="volume"):
        PackedWindows(list(packs.values()), window=WINDOW, keys=["crops", "volume"])
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as f:
        f.attrs["video_id"] = "odd"
        f["timestamps"] = np.arange(10) / 25.0
        f["landmarks"] = np.zeros((9, 68, 2), np.float32)
    with pytest.raises(ValueError, match="landmarks"):
        PackedWindows([odd], window=4, keys=["landmarks"])


def test_dataloader_workers_yield_every_window_exactly_once(packs):
    dataset = PackedWindows(list(packs.values()), window=WINDOW, stride=STRIDE, keys=KEYS)
    dataset[0]  # the parent opens its files before the workers fork: they must reopen
    loader = DataLoader(dataset, batch_size=3, num_workers=2, shuffle=True)
    windows = []
    for batch in loader:
        assert batch["crops"].shape[1:] == (WINDOW, 24, 24, 3)
        windows += zip(batch["video_id"], batch["start"].tolist(), strict=True)
    assert len(windows) == len(dataset)
    assert set(windows) == expected_starts()


def test_a_dataset_pack_serves_the_same_windows_as_its_files(packs, tmp_path):
    pack = DatasetPack(tmp_path / "pack", max_videos_per_shard=2)
    pack.append(packs)
    from_pack = PackedWindows(tmp_path / "pack", window=WINDOW, stride=STRIDE, keys=KEYS)
    from_files = PackedWindows(list(packs.values()), window=WINDOW, stride=STRIDE, keys=KEYS)
    assert len(from_pack) == len(from_files)
    for index in range(len(from_pack)):
        a, b = from_pack[index], from_files[index]
        assert (a["video_id"], a["start"]) == (b["video_id"], b["start"])
        for key in KEYS:
            assert torch.equal(a[key], b[key])
    from_pack.close()


# --- validity: frames without a face, frames after the audio's end -------------------

NO_FACE = range(10, 15)  # frames 10..14 have no face
AUDIO_END_FRAME = 25  # the wav ends at frame 25's time (1.0 s): frames 25.. have no audio


@pytest.fixture
def gappy_pack(tmp_path):
    count = 30
    stack = tmp_path / "crops.h5"
    with ImageStackWriter(stack, "crops") as writer:
        for i in range(count):
            writer.append(frame(i), i / 25)
    face_mask = np.ones(count, np.uint8)
    face_mask[list(NO_FACE)] = 0
    face_mask[15] = 2  # interpolated: still a valid frame
    path = tmp_path / "gappy.h5"
    pack_video(
        path, video_id="gappy", frame_times=np.arange(count) / 25.0,
        image_stacks={"crops": stack},
        arrays={"landmarks": np.zeros((count, 68, 2), np.float32), "face_mask": face_mask},
        audio_features={"wav2vec": np.ones((80, 6), np.float32)},  # 1.6 s of features
        options=PackOptions(), audio_samples=AUDIO_END_FRAME * 16_000 // 25,
    )  # fmt: skip
    return path, face_mask


def brute_force_starts(count, window, stride, bad_frames):
    return [
        s
        for s in range(0, count - window + 1, stride)
        if not any(s <= b < s + window for b in bad_frames)
    ]


@pytest.mark.parametrize(
    "keys, bad",
    [
        (["crops", "landmarks"], list(NO_FACE)),
        (["crops", "wav2vec"], [*NO_FACE, *range(AUDIO_END_FRAME, 30)]),
    ],
)
def test_by_default_windows_with_an_invalid_frame_are_skipped(gappy_pack, keys, bad):
    path, _ = gappy_pack
    dataset = PackedWindows(path, window=4, stride=2, keys=keys)
    starts = [dataset[i]["start"] for i in range(len(dataset))]
    assert starts == brute_force_starts(30, 4, 2, bad)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["face_mask"].dtype == torch.uint8 and (item["face_mask"] != 0).all()
        if "wav2vec" in keys:
            assert item["audio_mask"].dtype == torch.bool and item["audio_mask"].all()
            assert (item["wav2vec"] == 1).all()  # real audio in every served frame
        else:
            assert "audio_mask" not in item  # no audio requested: its mask does not apply


def test_skip_invalid_false_serves_every_window_with_its_masks(gappy_pack):
    path, face_mask = gappy_pack
    dataset = PackedWindows(path, window=4, stride=2, keys=["crops", "wav2vec"], skip_invalid=False)
    assert len(dataset) == len(range(0, 27, 2))
    with h5py.File(path, "r") as f:
        audio_mask = f["audio_mask"][:]
    np.testing.assert_array_equal(audio_mask, np.arange(30) < AUDIO_END_FRAME)
    for index in range(len(dataset)):
        item = dataset[index]
        start = item["start"]
        assert start == index * 2
        np.testing.assert_array_equal(item["face_mask"].numpy(), face_mask[start : start + 4])
        np.testing.assert_array_equal(item["audio_mask"].numpy(), audio_mask[start : start + 4])
        silent = ~audio_mask[start : start + 4]
        assert (item["wav2vec"].numpy()[silent] == 0).all()  # silence, not the last step
