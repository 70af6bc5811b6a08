"""The original's main graph, EMOCA -> FLAME -> rendering -> A2EN and the packers, run the
way a user runs it (``dpl run``) on a real face clip, with stand-in model files built here
(random EMOCA weights in the official checkpoint layout, a small FLAME-format pickle with
chumpy stand-ins, a head template .obj). References: the same libraries called directly on
the decoded crops and on the stored parameters.
"""

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from dpl_assets.face3d.emoca import EmocaEncoder
from dpl_assets.face3d.flame import FlameModel
from dpl_assets.face3d.flame_layer import FlameLayer
from dpl_assets.face3d.obj import load_obj_template
from dpl_assets.face3d.render import render
from dpl_assets.samples import make_clip
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets_tests.test_flame import make_arrays, make_embedding, write_embedding, write_model
from dpl_assets_tests.test_pipeline import run_cli
from dpl_assets_tests.tiny_wav2vec import build_tiny_wav2vec

VIDEO = "talk"


def write_template(path: Path, arrays: dict) -> None:
    """A head template .obj on the stand-in mesh: its vertices, one UV per vertex."""
    verts = arrays["v_template"]
    uvs = (verts[:, :2] - verts[:, :2].min(0)) / np.ptp(verts[:, :2], axis=0)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in arrays["f"]]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("face3d")
    make_clip(root / "videos" / f"{VIDEO}.mp4", "A few words.", seconds=0.6)
    torch.manual_seed(0)
    encoder = EmocaEncoder().eval()
    checkpoint = root / "emoca" / "detail" / "checkpoints" / "deca-epoch=01-val=1.0.ckpt"
    checkpoint.parent.mkdir(parents=True)
    state = {f"deca.{key}": value for key, value in encoder.state_dict().items()}
    torch.save({"state_dict": state}, checkpoint)
    arrays = make_arrays()
    write_model(root / "generic_model.pkl", arrays)
    write_embedding(root / "landmark_embedding.npy", make_embedding())
    write_template(root / "head_template.obj", arrays)
    flame_files = {
        "flame_model_path": str(root / "generic_model.pkl"),
        "flame_lmk_embedding_path": str(root / "landmark_embedding.npy"),
    }
    graph = [
        {"name": "VideoToImagesNode", "params": {}},
        {"name": "FaceAlignmentNode", "params": {}},
        {"name": "FixedBboxesNode", "params": {}},
        {"name": "CropNode", "params": {"size_hw": [128, 128]}},
        {"name": "BlinksNode", "params": {}},
        {"name": "EmocaNode", "params": {"weights_path": str(root / "emoca"), "device": "cpu"}},
        {"name": "FlameNode", "params": flame_files},
        {
            "name": "RenderingNode",
            "params": {"head_template_path": str(root / "head_template.obj"), "image_size": 64},
        },
        {"name": "VideoToWavNode", "params": {}},
        {"name": "Wav2vecNode", "params": {"checkpoint": str(build_tiny_wav2vec(root / "w2v"))}},
        {"name": "A2enDatasetNode", "params": {}},
        {"name": "SourceSequenceNode", "params": {}},
        {"name": "Vid2vidDatasetNode", "params": {}},
    ]
    code, report = run_cli(root, graph, {"video": "videos"})
    out = root / "out"
    video = report[VIDEO]
    return {"code": code, "video": video, "out": out, "root": root, "encoder": encoder,
            "flame_files": flame_files}  # fmt: skip


def test_the_graph_runs_and_its_outputs_pass_their_checks(run):
    assert run["code"] == 0, run["video"]
    assert run["video"]["status"] == "processed" and run["video"]["failed_checks"] == {}


def test_emoca_parameters_equal_the_encoder_on_the_crops(run):
    out = run["out"]
    with ImageStack(out / "crops" / f"{VIDEO}.h5") as stack:
        crops = [cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA) for c in stack]
    batch = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    expected = run["encoder"].encode(batch, batch_size=4)
    for key, shape in {"shape": (100,), "exp": (50,), "pose": (6,), "cam": (3,),
                       "light": (9, 3), "tex": (50,)}.items():  # fmt: skip
        stored = np.load(out / key / f"{VIDEO}.npy")
        assert stored.shape == (len(crops), *shape), key
        np.testing.assert_allclose(stored, expected[key], atol=1e-4, err_msg=key)


def test_flame_and_renders_equal_direct_calls_on_the_stored_parameters(run):
    out, files = run["out"], run["flame_files"]
    shape, exp, pose = (np.load(out / k / f"{VIDEO}.npy") for k in ("shape", "exp", "pose"))
    layer = FlameLayer(FlameModel.load(files["flame_model_path"], files["flame_lmk_embedding_path"],
                                       num_vertices=None))  # fmt: skip
    verts, landmarks3d = layer.forward_numpy(shape, exp, pose)
    np.testing.assert_allclose(np.load(out / "verts" / f"{VIDEO}.npy"), verts, atol=1e-6)
    np.testing.assert_allclose(
        np.load(out / "landmarks3d" / f"{VIDEO}.npy"), landmarks3d, atol=1e-6
    )

    cam, light = (np.load(out / k / f"{VIDEO}.npy") for k in ("cam", "light"))
    template = load_obj_template(run["root"] / "head_template.obj")
    direct = render(torch.from_numpy(verts), cam, light, template, 64)
    with ImageStack(out / "render_mask" / f"{VIDEO}.h5") as masks:
        assert len(masks) == len(verts)
        stored = np.stack([m[..., 0] for m in masks])  # lossless PNG
    np.testing.assert_array_equal(stored, direct.render_mask.numpy())


def test_training_files_hold_the_3d_outputs(run):
    out = run["out"]
    frames = np.load(out / "verts" / f"{VIDEO}.npy").shape[0]
    with h5py.File(out / "source_sequence" / f"{VIDEO}.h5", "r") as file:
        for key in ("images", "crops", "shape", "exp", "pose", "cam", "light", "landmarks3d",
                    "render_uv", "render_normal", "blinks"):  # fmt: skip
            assert file[key].shape[0] == frames, key
    with h5py.File(out / "vid2vid_dataset" / f"{VIDEO}.h5", "r") as file:
        assert {"crops", "render_uv", "render_normal"} <= set(file)
    with np.load(out / "a2en" / f"{VIDEO}.npz", allow_pickle=False) as npz:
        assert npz["exp"].shape == (frames, 50) and npz["jaw"].shape == (frames, 3)
        assert npz["wav2vec"].shape[0] == frames and npz["left_blink"].shape == (frames,)


def test_flame_and_rendering_from_parameters_given_in_the_inputs(tmp_path, run):
    """FlameNode + RenderingNode on shape/exp/pose/cam/light roots: no video, no EMOCA."""
    rng = np.random.default_rng(3)
    frames = 7
    given = {
        "shape": rng.normal(size=(frames, 100)).astype(np.float32),
        "exp": rng.normal(size=(frames, 50)).astype(np.float32),
        "pose": (0.2 * rng.normal(size=(frames, 6))).astype(np.float32),
        "cam": np.tile(np.array([[8.0, 0.0, 0.0]], np.float32), (frames, 1)),
        "light": (0.1 * rng.normal(size=(frames, 9, 3))).astype(np.float32),
    }
    for key, array in given.items():
        (tmp_path / key).mkdir()
        np.save(tmp_path / key / "elsewhere.npy", array)
    root = run["root"]
    graph = [
        {"name": "FlameNode", "params": run["flame_files"]},
        {
            "name": "RenderingNode",
            "params": {"head_template_path": str(root / "head_template.obj"), "image_size": 48},
        },
    ]
    code, report = run_cli(tmp_path, graph, {key: key for key in given})
    out = tmp_path / "out"
    video = report["elsewhere"]
    assert code == 0 and video["status"] == "processed", video
    layer = FlameLayer(FlameModel.load(run["flame_files"]["flame_model_path"],
                                       run["flame_files"]["flame_lmk_embedding_path"],
                                       num_vertices=None))  # fmt: skip
    verts, _ = layer.forward_numpy(given["shape"], given["exp"], given["pose"])
    np.testing.assert_allclose(np.load(out / "verts" / "elsewhere.npy"), verts, atol=1e-6)
    with ImageStack(out / "render_mask" / "elsewhere.h5") as masks:
        assert len(masks) == frames and masks[0].shape == (48, 48, 3)
        np.testing.assert_allclose(masks.timestamps, np.arange(frames) / 25.0)
        assert any(mask.any() for mask in masks)  # the mesh is in view (scale 8 on a 0.2 m grid)
