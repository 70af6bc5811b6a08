"""Packing: image layouts in HDF5, audio resampling, per-video packs, dataset packs.

Media are made with numpy/cv2 (a smooth colour field plus fine luminance detail, like a
photo: JPEG at quality 95 keeps it above 40 dB). Quality bound used throughout: PSNR
> 35 dB at quality 95, computed here with numpy; PNG must round-trip exactly.
"""

import io
import json
import os

import cv2
import h5py
import numpy as np
import pytest
from PIL import Image

from dpl_assets.packing.dataset_pack import DatasetPack, group_name, video_id_of
from dpl_assets.packing.layouts import (
    JPEG_FILTER_ID,
    LAYOUTS,
    ImageDatasetWriter,
    image_header,
    open_images,
)
from dpl_assets.packing.resample import feature_times, moving_average, resample_to_frames
from dpl_assets.packing.video_pack import PackOptions, pack_video
from dpl_assets.storage.image_codec import encode_image
from dpl_assets.storage.image_stack import ImageStackWriter

PSNR_BOUND_Q95 = 35.0
ODD_IDS = ("a/b", "x y", "ünï", ".hidden", "a%2Fb", "..", "tab\there")


def textured_frame(height: int, width: int, index: int = 0, seed: int = 0) -> np.ndarray:
    """RGB uint8 (H, W, 3): smooth colours + 4-pixel luminance detail, a view moving with
    ``index`` over a larger canvas (a drifting camera; no wrap-around seams)."""
    rng = np.random.default_rng(seed)
    canvas_h, canvas_w = height + 16, width + 32
    colour = rng.uniform(40, 200, (3, 4, 3)).astype(np.float32)
    colour = cv2.resize(colour, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC)
    detail = rng.uniform(-40, 40, (canvas_h // 4, canvas_w // 4)).astype(np.float32)
    detail = cv2.resize(detail, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(colour + detail[..., None], 0, 255).astype(np.uint8)
    top, left = index % 16, (2 * index) % 32
    return np.ascontiguousarray(canvas[top : top + height, left : left + width])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def write_stack(path, key, count, size=(48, 64), quality=95, image_format="jpeg", seed=0):
    """An image-stack file as the pipeline writes it (ImageStackWriter); returns the frames."""
    frames = [textured_frame(*size, index=i, seed=seed) for i in range(count)]
    with ImageStackWriter(path, key, image_format=image_format, quality=quality) as stack:
        for i, frame in enumerate(frames):
            stack.append(frame, i / 25)
    return frames


# --- layouts -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_jpeg_round_trip_in_both_layouts_stays_above_the_psnr_bound(tmp_path, layout):
    frames = [textured_frame(48, 64, index=i) for i in range(6)]
    with h5py.File(tmp_path / "f.h5", "w") as f, ImageDatasetWriter(f, "crops", layout=layout) as w:
        for frame in frames:
            w.append(frame)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        images = open_images(f["crops"])
        assert images.layout == layout and len(images) == 6
        assert dict(f["crops"].attrs) == {
            "layout": layout, "format": "jpeg", "quality": 95, "width": 64, "height": 48,
            "channels": 3,
        }  # fmt: skip
        for i, frame in enumerate(frames):
            assert images[i].shape == (48, 64, 3) and images[i].dtype == np.uint8
            assert psnr(images[i], frame) > PSNR_BOUND_Q95
        batch = images.read(range(1, 5))
        assert np.array_equal(batch, np.stack([images[i] for i in range(1, 5)]))
        assert np.array_equal(images.read([5, 0, 5]), np.stack([images[5], images[0], images[5]]))
        assert np.array_equal(images[-1], images[5])
        assert np.array_equal(np.stack(list(images)), images.read(range(6)))
        with pytest.raises(IndexError):
            images[6]


def test_png_in_the_vlen_layout_is_lossless(tmp_path):
    frames = [textured_frame(32, 40, index=i) for i in range(4)]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        with ImageDatasetWriter(f, "images", image_format="png") as w:
            for frame in frames:
                w.append(frame)
        images = open_images(f["images"])
        assert images.format == "png"
        assert all(np.array_equal(images[i], frames[i]) for i in range(4))


def test_filter32019_dataset_follows_the_original_tools_convention(tmp_path):
    height, width, count = 48, 64, 5
    frames = [textured_frame(height, width, index=i) for i in range(count)]
    with (
        h5py.File(tmp_path / "f.h5", "w") as f,
        ImageDatasetWriter(f, "crops", layout="filter32019", quality=95) as w,
    ):
        for frame in frames:
            w.append(frame)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        dset = f["crops"]
        assert dset.shape == (count, height, width, 3) and dset.dtype == np.uint8
        assert dset.chunks == (1, height, width, 3)
        assert dset.maxshape == (None, height, width, 3)
        plist = dset.id.get_create_plist()
        assert plist.get_nfilters() == 1
        filter_id, flags, values, _name = plist.get_filter(0)
        assert filter_id == JPEG_FILTER_ID == 32019
        assert tuple(values) == (95, width, height, 1)
        assert flags & h5py.h5z.FLAG_OPTIONAL
        assert dset.id.get_num_chunks() == count
        ours = open_images(dset)
        for i, frame in enumerate(frames):
            mask, chunk = dset.id.read_direct_chunk((i, 0, 0, 0))
            assert mask == 0  # the filter counts as applied: readers with the plugin decode it
            # An independent decoder (Pillow) reads each chunk as a standalone JPEG.
            with Image.open(io.BytesIO(chunk)) as image:
                assert image.format == "JPEG" and image.size == (width, height)
                assert image.mode == "RGB"
                reference = np.asarray(image)
            assert psnr(reference, frame) > PSNR_BOUND_Q95
            assert np.abs(reference.astype(int) - ours[i].astype(int)).mean() < 1.0


def test_filter32019_grey_frames_use_mode_0(tmp_path):
    grey = [textured_frame(32, 48, index=i)[..., 1] for i in range(3)]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        with ImageDatasetWriter(f, "masks", layout="filter32019", quality=90) as w:
            for frame in grey:
                w.append(frame)
        dset = f["masks"]
        assert dset.shape == (3, 32, 48) and dset.chunks == (1, 32, 48)
        assert tuple(dset.id.get_create_plist().get_filter(0)[2]) == (90, 48, 32, 0)
        images = open_images(dset)
        assert images[0].shape == (32, 48) and psnr(images[2], grey[2]) > 35


@pytest.mark.parametrize("layout", LAYOUTS)
def test_encoded_bytes_are_stored_unchanged(tmp_path, layout):
    encoded = [encode_image(textured_frame(32, 32, index=i), "jpeg", 95) for i in range(3)]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        with ImageDatasetWriter(f, "crops", layout=layout) as w:
            w.append(encoded[0])
            w.append(np.frombuffer(encoded[1], np.uint8))  # what h5py returns for vlen entries
            w.append(bytearray(encoded[2]))
        images = open_images(f["crops"])
        assert [images.encoded(i) for i in range(3)] == encoded
        assert list(images.iter_encoded()) == encoded


def test_writer_refuses_bytes_that_do_not_fit(tmp_path):
    rgb = textured_frame(32, 32)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        writer = ImageDatasetWriter(f, "a", layout="filter32019")
        with pytest.raises(ValueError, match="png bytes in a jpeg"):
            writer.append(encode_image(rgb, "png"))
        writer.append(encode_image(rgb, "jpeg"))
        with pytest.raises(ValueError, match=r"\(16, 32, 3\)"):
            writer.append(encode_image(rgb[:16], "jpeg"))
        with pytest.raises(ValueError, match="is \\(32, 32\\)"):
            writer.append(encode_image(rgb[..., 0], "jpeg"))  # grey into an RGB dataset
        with pytest.raises(ValueError, match="magic"):
            writer.append(b"GIF89a not an image")
        with pytest.raises(ValueError, match="JPEG only"):
            ImageDatasetWriter(f, "b", layout="filter32019", image_format="png")
        assert writer.finish().shape == (1, 32, 32, 3)


def test_image_header_reads_size_and_channels_without_decoding():
    rgb = textured_frame(24, 40)
    jpeg = image_header(encode_image(rgb, "jpeg"))
    assert (jpeg.format, jpeg.height, jpeg.width, jpeg.channels, jpeg.bits) == (
        "jpeg", 24, 40, 3, 8,
    )  # fmt: skip
    png = image_header(encode_image(rgb[..., 0], "png"))
    assert (png.format, png.height, png.width, png.channels, png.png_colour) == (
        "png", 24, 40, 1, 0,
    )  # fmt: skip
    with pytest.raises(ValueError):
        image_header(encode_image(rgb, "jpeg")[:20])


def test_unfiltered_chunks_read_as_raw_pixels(tmp_path):
    """Filter 32019 is optional: a writer without the plugin stores raw pixels and sets the
    chunk's filter-mask bit. Such chunks must read back exactly."""
    frame = textured_frame(16, 24)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        with ImageDatasetWriter(f, "crops", layout="filter32019") as w:
            w.append(frame)
            w.append(frame)
        f["crops"].id.write_direct_chunk((1, 0, 0, 0), frame.tobytes(), filter_mask=1)
        images = open_images(f["crops"])
        assert np.array_equal(images[1], frame)
        assert psnr(images[0], frame) > PSNR_BOUND_Q95


def test_open_images_reads_pipeline_image_stacks(tmp_path):
    frames = write_stack(tmp_path / "images.h5", "images", 3, quality=90)
    with h5py.File(tmp_path / "images.h5", "r") as f:
        images = open_images(f["images"])
        assert (images.layout, images.format, images.quality) == ("vlen", "jpeg", 90)
        assert images.frame_shape == (48, 64, 3)
        assert psnr(images[2], frames[2]) > 33


def test_stacks_and_vlen_training_datasets_are_one_layout(tmp_path):
    """A stack's entries copied into a training file keep their bytes, dtype and chunking;
    both read back through the same reader, past one read block (64 entries)."""
    write_stack(tmp_path / "images.h5", "images", 70, size=(16, 24))
    with h5py.File(tmp_path / "images.h5", "r") as src, h5py.File(tmp_path / "t.h5", "w") as f:
        stack = open_images(src["images"])
        with ImageDatasetWriter(f, "images", frame_shape=stack.frame_shape) as writer:
            for data in stack.iter_encoded():
                writer.append(data)
        packed = open_images(f["images"])
        for dset in (src["images"], f["images"]):
            assert (dset.dtype, dset.chunks, dset.maxshape) == (
                src["images"].dtype, (64,), (None,)
            )  # fmt: skip
        assert list(packed.iter_encoded()) == [stack.encoded(i) for i in range(70)]
        assert np.array_equal(packed.read(slice(None)), np.stack(list(stack)))
        assert np.array_equal(packed.read([69, 3, 3]), stack.read([69, 3, 3]))


def test_raw_frames_read_like_the_other_layouts(tmp_path):
    """Plain uint8 (N, H, W, 3) frames (a filter32019 file after h5repack) read as they
    are, in runs past one read block, and encode as JPEG on request."""
    frames = np.stack([textured_frame(16, 24, index=i) for i in range(70)])
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["images"] = frames
        images = open_images(f["images"])
        assert (images.layout, images.format, images.quality) == ("raw", "raw", 95)
        assert np.array_equal(images.read(range(70)), frames)
        assert np.array_equal(images.read([5, 1]), frames[[5, 1]])
        assert np.array_equal(np.stack(list(images)), frames)
        assert np.array_equal(images[-1], frames[-1])
        assert psnr(cv2.imdecode(np.frombuffer(images.encoded(3), np.uint8), 1)[..., ::-1],
                    frames[3]) > PSNR_BOUND_Q95  # fmt: skip
        with pytest.raises(IndexError, match="frame 70 out of range"):
            images.read([70])


# --- resampling ----------------------------------------------------------------------


def test_feature_times_are_step_centres():
    assert np.allclose(feature_times(3), [0.0125, 0.0325, 0.0525])
    assert np.allclose(feature_times(2, window_samples=320), [0.01, 0.03])
    assert feature_times(0).shape == (0,)


def test_resample_to_frames_interpolates_linearly_and_holds_the_edges():
    features = np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 50.0]], np.float32)
    steps = np.array([0.0125, 0.0325, 0.0525])
    frames = np.array([0.0, 0.0125, 0.0225, 0.04, 0.0525, 0.5])
    out = resample_to_frames(features, steps, frames)
    # By hand: before the first step -> step 0; midway -> the mean; 0.04 is 0.375 of the
    # way from step 1 to step 2; after the last step -> step 2.
    expected = [[0, 10], [0, 10], [1, 20], [2 + 0.375 * 2, 30 + 0.375 * 20], [4, 50], [4, 50]]
    assert out.dtype == np.float32 and out.shape == (6, 2)
    assert np.allclose(out, expected, atol=1e-6)
    cube = np.arange(3 * 2 * 3, dtype=np.float32).reshape(3, 2, 3)
    out3 = resample_to_frames(cube, steps, frames)
    assert out3.shape == (6, 2, 3)
    assert np.allclose(out3[2], (cube[0] + cube[1]) / 2)
    assert np.allclose(resample_to_frames(np.array([7.0]), [0.1], [0.0, 1.0]), [7, 7])
    with pytest.raises(ValueError):
        resample_to_frames(features, steps[:2], frames)


@pytest.mark.parametrize("window", [2, 3, 4, 5, 16])
def test_moving_average_matches_an_edge_padded_convolution(window):
    x = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    left = window // 2
    padded = np.pad(x.astype(np.float64), ((left, window - 1 - left), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    expected = np.stack([np.convolve(padded[:, d], kernel, mode="valid") for d in range(3)], axis=1)
    out = moving_average(x, window)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.allclose(out, expected, atol=1e-5)


def test_moving_average_window_of_one_or_less_is_the_identity():
    x = np.arange(10, dtype=np.float32)
    assert np.array_equal(moving_average(x, 0), x)
    assert np.array_equal(moving_average(x, 1), x)
    assert np.allclose(moving_average(np.full(3, 2.0), 16), 2.0)  # window longer than x


# --- per-video packs -----------------------------------------------------------------


@pytest.fixture
def video_inputs(tmp_path):
    """A 12-frame video: two image stacks, arrays, and 50 Hz audio features."""
    count = 12
    images = write_stack(tmp_path / "src" / "images.h5", "images", count, size=(48, 64))
    crops = write_stack(tmp_path / "src" / "crops.h5", "crops", count, size=(32, 32), seed=3)
    rng = np.random.default_rng(2)
    times = np.arange(count) / 25.0 + 0.1  # the video starts 0.1 s into the container
    steps = feature_times(40)  # 0.8 s of audio
    return {
        "frames": {"images": images, "crops": crops},
        "frame_times": times,
        "image_stacks": {"images": tmp_path / "src/images.h5", "crops": tmp_path / "src/crops.h5"},
        "arrays": {
            "landmarks": rng.normal(size=(count, 68, 2)).astype(np.float32),
            "bboxes": rng.integers(0, 100, (count, 4)),
            "face_mask": np.ones(count, np.uint8),
        },
        "audio_features": {
            "wav2vec": rng.normal(size=(steps.size, 8)).astype(np.float32),
            "volume": rng.uniform(size=steps.size).astype(np.float32),
        },
    }


def pack(path, inputs, options=None, **overrides):
    kwargs = {key: inputs[key] for key in ("frame_times", "image_stacks", "arrays")}
    kwargs["audio_features"] = inputs["audio_features"]
    kwargs.update(overrides)
    return pack_video(
        path, video_id="clip one", options=options or PackOptions(), attrs={"node": "t"}, **kwargs
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pack_video_writes_every_modality_and_copies_matching_jpeg_bytes(
    tmp_path, video_inputs, layout
):
    out = tmp_path / "packed" / "clip one.h5"
    summary = pack(out, video_inputs, PackOptions(layout=layout))
    assert summary.frames == 12 and summary.bytes == out.stat().st_size
    assert summary.copied == ("images", "crops") and summary.reencoded == ()
    assert summary.datasets == {
        "timestamps": (12,), "images": (12, 48, 64, 3), "crops": (12, 32, 32, 3),
        "landmarks": (12, 68, 2), "bboxes": (12, 4), "face_mask": (12,), "wav2vec": (12, 8),
        "volume": (12,), "audio_mask": (12,),
    }  # fmt: skip
    times = video_inputs["frame_times"]
    with h5py.File(out, "r") as f:
        assert f.attrs["video_id"] == "clip one" and f.attrs["frame_count"] == 12
        assert f.attrs["fps"] == pytest.approx(25.0)
        assert (f.attrs["layout"], f.attrs["image_format"], f.attrs["jpeg_quality"]) == (
            layout, "jpeg", 95,
        )  # fmt: skip
        assert f.attrs["node"] == "t"
        assert list(f.attrs["image_keys"]) == ["images", "crops"]
        assert np.array_equal(f["timestamps"][:], times)
        for key in ("images", "crops"):
            packed = open_images(f[key])
            assert packed.layout == layout
            with h5py.File(video_inputs["image_stacks"][key], "r") as src:
                source = [src[key][i].tobytes() for i in range(12)]
            assert [packed.encoded(i) for i in range(12)] == source  # copied, not re-encoded
        for key, value in video_inputs["arrays"].items():
            assert f[key].compression == "gzip" and f[key].dtype == value.dtype
            assert np.array_equal(f[key][:], value)
        for key, steps in video_inputs["audio_features"].items():
            window = 320 if key == "volume" else 400
            step_times = feature_times(len(steps), window_samples=window)
            expected = np.stack(
                [np.interp(times, step_times, col) for col in steps.reshape(40, -1).T], 1
            )
            assert f[key].dtype == np.float32
            assert np.allclose(f[key][:].reshape(12, -1), expected, atol=1e-6)


def test_pack_video_reencodes_when_quality_or_format_differ(tmp_path, video_inputs):
    summary = pack(tmp_path / "q80.h5", video_inputs, PackOptions(jpeg_quality=80))
    assert summary.reencoded == ("images", "crops")
    with h5py.File(tmp_path / "q80.h5", "r") as f:
        images = open_images(f["images"])
        assert images.quality == 80
        assert psnr(images[3], video_inputs["frames"]["images"][3]) > 30
    pack(tmp_path / "png.h5", video_inputs, PackOptions(image_format="png"))
    with (
        h5py.File(tmp_path / "png.h5", "r") as f,
        h5py.File(video_inputs["image_stacks"]["crops"], "r") as src,
    ):
        source = open_images(src["crops"])
        packed = open_images(f["crops"])
        assert packed.format == "png"
        assert all(np.array_equal(packed[i], source[i]) for i in range(12))  # PNG is lossless


def test_pack_video_smooths_resampled_audio(tmp_path, video_inputs):
    pack(tmp_path / "raw.h5", video_inputs)
    pack(tmp_path / "smooth.h5", video_inputs, PackOptions(smooth_window=4))
    with h5py.File(tmp_path / "raw.h5", "r") as raw, h5py.File(tmp_path / "smooth.h5", "r") as sm:
        assert np.allclose(sm["wav2vec"][:], moving_average(raw["wav2vec"][:], 4), atol=1e-6)
        assert sm["wav2vec"].attrs["smooth_window"] == 4
        assert np.array_equal(sm["landmarks"][:], raw["landmarks"][:])  # arrays untouched


def test_pack_video_rejects_lengths_that_disagree_naming_the_key(tmp_path, video_inputs):
    out = tmp_path / "bad.h5"
    arrays = dict(video_inputs["arrays"], head_pose=np.zeros((11, 6), np.float32))
    with pytest.raises(ValueError, match="head_pose"):
        pack(out, video_inputs, arrays=arrays)
    write_stack(tmp_path / "short.h5", "crops", 5, size=(32, 32))
    stacks = dict(video_inputs["image_stacks"], crops=tmp_path / "short.h5")
    with pytest.raises(ValueError, match=r"crops.*5 frames"):
        pack(out, video_inputs, image_stacks=stacks)
    with pytest.raises(ValueError, match="wav2vec"):
        pack(out, video_inputs, arrays={"wav2vec": np.zeros((12, 2))})  # clashes with audio
    assert not out.exists() and list(tmp_path.glob(".tmp-*")) == []


def test_pack_video_failing_midway_leaves_no_file_and_keeps_an_old_one(tmp_path, video_inputs):
    # A source stack whose 8th entry is not an image: packing at another quality decodes
    # every frame and fails there, after the file has been partly written.
    broken = tmp_path / "broken.h5"
    write_stack(broken, "crops", 12, size=(32, 32))
    with h5py.File(broken, "r+") as f:
        f["crops"][7] = np.frombuffer(b"\xff\xd8 truncated", np.uint8)
    stacks = dict(video_inputs["image_stacks"], crops=broken)
    out = tmp_path / "out" / "clip.h5"
    with pytest.raises(ValueError):
        pack(out, video_inputs, PackOptions(jpeg_quality=80), image_stacks=stacks)
    assert not out.exists() and list(out.parent.iterdir()) == []

    pack(out, video_inputs)
    before = out.read_bytes()
    with pytest.raises(ValueError):
        pack(out, video_inputs, PackOptions(jpeg_quality=80), image_stacks=stacks)
    assert out.read_bytes() == before and list(out.parent.iterdir()) == [out]


# --- dataset packs -------------------------------------------------------------------


def make_video_pack(path, video_id, count, seed=0):
    """A small per-video pack file written by pack_video."""
    stack = path.parent / f"{path.stem}-crops.h5"
    write_stack(stack, "crops", count, size=(16, 16), seed=seed)
    pack_video(
        path, video_id=video_id, frame_times=np.arange(count) / 25.0,
        image_stacks={"crops": stack},
        arrays={"landmarks": np.full((count, 68, 2), seed, np.float32)},
        audio_features={"volume": np.linspace(0, 1, 2 * count + 2, dtype=np.float32)},
        options=PackOptions(layout="filter32019" if seed % 2 else "vlen"),
    )  # fmt: skip
    return path


def test_group_names_are_safe_and_reversible():
    names = [group_name(video_id) for video_id in ODD_IDS]
    assert len(set(names)) == len(ODD_IDS)  # "a/b" and "a%2Fb" stay distinct
    for video_id, name in zip(ODD_IDS, names, strict=True):
        assert "/" not in name and not name.startswith(".") and "\t" not in name
        assert video_id_of(name) == video_id
    with pytest.raises(ValueError):
        group_name("")


def test_dataset_pack_appends_new_videos_into_new_shards_only(tmp_path):
    sources = {
        video_id: make_video_pack(tmp_path / "src" / f"v{i}.h5", video_id, 5 + i, seed=i)
        for i, video_id in enumerate(ODD_IDS)
    }
    ids = list(sources)
    pack = DatasetPack(tmp_path / "pack")
    assert pack.append({k: sources[k] for k in ids[:3]}) == ids[:3]
    first = tmp_path / "pack" / "shard-00000.h5"
    first_bytes, first_mtime = first.read_bytes(), first.stat().st_mtime_ns

    assert pack.append(sources) == ids[3:]  # present ids are skipped
    assert pack.append(sources) == []
    assert first.read_bytes() == first_bytes and first.stat().st_mtime_ns == first_mtime
    assert pack.shards == ["shard-00000.h5", "shard-00001.h5"]
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == [
        ".append.lock", "dataset.h5", "index.json", "shard-00000.h5", "shard-00001.h5",
    ]  # fmt: skip

    reopened = DatasetPack(tmp_path / "pack")
    assert reopened.videos() == ids
    index = json.loads((tmp_path / "pack" / "index.json").read_text(encoding="utf-8"))
    assert list(index["videos"]) == ids
    for i, video_id in enumerate(ids):
        entry = reopened.entry(video_id)
        assert entry.frame_count == 5 + i and "crops" in entry.keys
        with reopened.open_video(video_id) as group, h5py.File(sources[video_id], "r") as src:
            assert group.attrs["video_id"] == video_id
            assert np.array_equal(group["landmarks"][:], src["landmarks"][:])
            assert open_images(group["crops"]).encoded(2) == open_images(src["crops"]).encoded(2)

    # One file with every video, through external links that resolve from any cwd.
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with h5py.File(tmp_path / "pack" / "dataset.h5", "r") as links:
            assert [v.decode() if isinstance(v, bytes) else v for v in links["video_ids"][:]] == ids
            for i, video_id in enumerate(ids):
                name = group_name(video_id)
                link = links["videos"].get(name, getlink=True)
                assert isinstance(link, h5py.ExternalLink)
                group = links["videos"][name]
                assert group.attrs["video_id"] == video_id
                assert group["timestamps"].shape == (5 + i,)
    finally:
        os.chdir(cwd)


def test_dataset_pack_rolls_shards_over_at_the_limits(tmp_path):
    sources = {f"v{i}": make_video_pack(tmp_path / f"v{i}.h5", f"v{i}", 4) for i in range(5)}
    by_count = DatasetPack(tmp_path / "by_count", max_videos_per_shard=2)
    by_count.append(sources)
    assert len(by_count.shards) == 3
    assert [by_count.entry(f"v{i}").shard for i in range(5)] == [
        "shard-00000.h5", "shard-00000.h5", "shard-00001.h5", "shard-00001.h5", "shard-00002.h5",
    ]  # fmt: skip
    by_size = DatasetPack(tmp_path / "by_size", max_shard_bytes=1)
    by_size.append(sources)
    assert len(by_size.shards) == 5


def test_a_crash_mid_append_leaves_the_pack_as_it_was(tmp_path, monkeypatch):
    sources = {f"v{i}": make_video_pack(tmp_path / f"v{i}.h5", f"v{i}", 4) for i in range(4)}
    pack = DatasetPack(tmp_path / "pack", max_videos_per_shard=1)
    pack.append({"v0": sources["v0"]})
    index_before = (tmp_path / "pack" / "index.json").read_bytes()
    links_before = (tmp_path / "pack" / "dataset.h5").read_bytes()

    real_copy = h5py.Group.copy
    calls = []

    def copy_then_die(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second new video: its shard is half written
            raise OSError("disk full")
        return real_copy(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "copy", copy_then_die)
    with pytest.raises(OSError, match="disk full"):
        pack.append(sources)
    monkeypatch.undo()

    assert (tmp_path / "pack" / "index.json").read_bytes() == index_before
    assert (tmp_path / "pack" / "dataset.h5").read_bytes() == links_before
    assert DatasetPack(tmp_path / "pack").videos() == ["v0"]
    # The next append clears the unindexed shard the crash left and adds everything.
    assert pack.append(sources) == ["v1", "v2", "v3"]
    assert pack.shards == [f"shard-{i:05d}.h5" for i in range(4)]
    assert not [p for p in (tmp_path / "pack").iterdir() if p.name.startswith(".tmp-")]


def test_dataset_pack_refuses_a_file_of_another_video(tmp_path):
    source = make_video_pack(tmp_path / "v.h5", "real id", 3)
    with pytest.raises(ValueError, match="real id"):
        DatasetPack(tmp_path / "pack").append({"other id": source})


def test_a_re_processed_video_replaces_its_copy_through_a_new_shard(tmp_path):
    source = make_video_pack(tmp_path / "src" / "v.h5", "v", 5, seed=1)
    pack = DatasetPack(tmp_path / "pack")
    assert pack.append({"v": source}) == ["v"]
    first = tmp_path / "pack" / "shard-00000.h5"
    first_bytes = first.read_bytes()
    assert pack.append({"v": source}) == []  # unchanged: skipped

    make_video_pack(source, "v", 7, seed=3)  # the video was processed again (source changed)
    assert pack.append({"v": source}) == ["v"]
    assert pack.entry("v").shard == "shard-00001.h5" and pack.entry("v").frame_count == 7
    assert first.read_bytes() == first_bytes  # the old shard is never rewritten
    with h5py.File(tmp_path / "pack" / "dataset.h5", "r") as links:
        assert links["videos"][group_name("v")]["landmarks"].shape[0] == 7


def _append_in_another_process(root: str, packed: dict) -> list:
    from pathlib import Path

    return DatasetPack(Path(root)).append({k: Path(v) for k, v in packed.items()})


def test_two_processes_appending_at_once_both_land(tmp_path):
    import concurrent.futures
    import multiprocessing

    sources = {
        f"v{i}": make_video_pack(tmp_path / "src" / f"v{i}.h5", f"v{i}", 6) for i in range(8)
    }
    halves = [dict(list(sources.items())[:4]), dict(list(sources.items())[4:])]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        jobs = [
            pool.submit(_append_in_another_process, str(tmp_path / "pack"),
                        {k: str(v) for k, v in half.items()})
            for half in halves
        ]  # fmt: skip
        added = sorted(video for job in jobs for video in job.result())
    assert added == sorted(sources)
    pack = DatasetPack(tmp_path / "pack")
    assert sorted(pack.videos()) == sorted(sources)
    for video_id in sources:
        with pack.open_video(video_id) as group:
            assert group["landmarks"].shape[0] == 6


# --- filter 32019: the plugin's name, and only chunks its decoder takes ---------------

# The name jpegHDF5 registers its filter with (jpeg_h5filter.c in
# https://github.com/CARS-UChicago/jpegHDF5: the H5Z_class_t's name field), written out
# here rather than imported, so a typo in the module cannot pass.
PLUGIN_FILTER_NAME = b"jpeg; see https://github.com/CARS-UChicago/jpegHDF5"


def stored_filter_in_a_fresh_process(path, name):
    """(id, flags, cd_values, name) of the first filter of ``path[name]`` as read by a new
    Python process that never imported our code (nothing registered there)."""
    import subprocess
    import sys

    script = (
        "import sys, h5py, json\n"
        "f = h5py.File(sys.argv[1], 'r')\n"
        "code, flags, values, name = f[sys.argv[2]].id.get_create_plist().get_filter(0)\n"
        "print(json.dumps([code, flags, list(values), name.decode()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), name], capture_output=True, text=True,
        check=True, env={**os.environ, "HDF5_PLUGIN_PATH": ""},
    ).stdout  # fmt: skip
    return json.loads(out)


@pytest.mark.parametrize("grey", [False, True])
def test_filter32019_datasets_record_the_plugins_filter_name(tmp_path, grey):
    frame = textured_frame(32, 48)
    frame = frame[..., 0] if grey else frame
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f, ImageDatasetWriter(f, "crops", layout="filter32019") as w:
        w.append(frame)
        w.append(encode_image(frame))
    code, flags, values, name = stored_filter_in_a_fresh_process(path, "crops")
    assert code == 32019 and name.encode() == PLUGIN_FILTER_NAME
    assert flags & h5py.h5z.FLAG_OPTIONAL and values == [95, 48, 32, 0 if grey else 1]
    with h5py.File(path, "r") as f:  # and this process reads the chunks as before
        images = open_images(f["crops"])
        assert images.layout == "filter32019" and psnr(images[1], frame) > PSNR_BOUND_Q95


def without_quantization_tables(jpeg: bytes) -> bytes:
    """The JPEG with its DQT segments cut out: frame header intact, the image undecodable
    (libjpeg stops with "Quantization table 0x00 was not defined", a fatal error)."""
    out, pos = bytearray(jpeg[:2]), 2
    while pos < len(jpeg):
        marker = jpeg[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            out += jpeg[pos:]
            break
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if marker != 0xDB:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out)


def cmyk_jpeg(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (width, height), (10, 20, 30, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_filter32019_writer_refuses_chunks_the_jpeg_decoder_rejects(tmp_path):
    rgb = textured_frame(32, 32)
    good = encode_image(rgb, "jpeg")
    truncated = good[: len(good) // 2]
    no_tables = without_quantization_tables(good)
    # Independent decoders agree these are broken (OpenCV gives up; Pillow raises).
    assert cv2.imdecode(np.frombuffer(no_tables, np.uint8), cv2.IMREAD_COLOR) is None
    with pytest.raises(OSError), Image.open(io.BytesIO(truncated)) as image:
        image.load()
    with h5py.File(tmp_path / "f.h5", "w") as f:
        writer = ImageDatasetWriter(f, "crops", layout="filter32019")
        writer.append(good)
        with pytest.raises(ValueError, match=r"crops frame 1: JPEG bytes the decoder rejects"):
            writer.append(truncated)
        with pytest.raises(ValueError, match=r"crops frame 1: JPEG bytes the decoder rejects"):
            writer.append(no_tables)
        with pytest.raises(ValueError, match=r"crops frame 1: .*4 channels"):
            writer.append(cmyk_jpeg(32, 32))  # colour space the dataset does not store
        writer.append(np.ascontiguousarray(rgb[::-1]))
        dset = writer.finish()
        assert dset.shape[0] == 2 and dset.id.get_num_chunks() == 2  # nothing else written
        images = open_images(dset)
        assert psnr(images[0], rgb) > PSNR_BOUND_Q95 and psnr(images[1], rgb[::-1]) > 35


# --- audio shorter than the video --------------------------------------------------------


@pytest.mark.parametrize("smooth", [0, 4])
def test_frames_after_the_audio_end_get_silence_and_a_false_audio_mask(
    tmp_path, video_inputs, smooth
):
    times = video_inputs["frame_times"]  # 0.10 .. 0.54 s
    steps = feature_times(40)
    audio = {
        "wav2vec": np.full((steps.size, 8), 2.0, np.float32),
        "volume": np.full(steps.size, 0.5, np.float32),
    }
    samples = 5600  # the wav ends at 0.35 s: frames 0.38 s and later have no audio
    out = tmp_path / "short audio.h5"
    pack(out, video_inputs, PackOptions(smooth_window=smooth), audio_features=audio,
         audio_samples=samples)  # fmt: skip
    has_audio = times < samples / 16000  # written out: 0.10 .. 0.34 s
    assert has_audio.sum() == 7 and not has_audio[7:].any()
    with h5py.File(out, "r") as f:
        mask = f["audio_mask"][:]
        assert mask.dtype == np.bool_ and mask.shape == (12,)
        np.testing.assert_array_equal(mask, has_audio)
        assert f["audio_mask"].attrs["audio_end_s"] == pytest.approx(0.35)
        volume, wav2vec = f["volume"][:], f["wav2vec"][:]
        for key in ("volume", "wav2vec"):
            assert f[key].attrs["valid_where"] == "audio_mask"
    assert np.all(volume[~has_audio] == 0) and np.all(wav2vec[~has_audio] == 0)  # silence
    if smooth == 0:  # constant audio: every frame before the end holds exactly its value
        assert np.all(volume[has_audio] == 0.5) and np.all(wav2vec[has_audio] == 2.0)
    else:  # the zeros of the silent frames smooth into the last audio frames, never past
        assert np.all(volume[:4] == pytest.approx(0.5)) and np.all(volume[has_audio] > 0)


def test_without_a_wav_length_the_audio_ends_where_its_features_end(tmp_path, video_inputs):
    times = video_inputs["frame_times"]
    steps = 15  # wav2vec: 14 * 320 + 400 samples = 0.305 s; volume: 15 * 320 = 0.3 s
    audio = {
        "wav2vec": np.ones((steps, 8), np.float32),
        "volume": np.ones(steps, np.float32),
    }
    out = tmp_path / "features only.h5"
    pack(out, video_inputs, audio_features=audio)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["audio_mask"][:], times < 0.3)
        np.testing.assert_array_equal(f["volume"][:], (times < 0.3).astype(np.float32))
