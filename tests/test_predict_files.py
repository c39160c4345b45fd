"""Tests of tools/infer.py, the prediction files, and loading checkpoint weights for inference."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import save_checkpoint, tiny_config, write_dataset
from PIL import Image

from segls import config
from segls.cli import infer as infer_cli
from segls.data import read_mask
from segls.data.transforms import build_transform
from segls.io import encode_png
from segls.models import InferenceSettings, build_model, checkpoint, predict_classes
from segls.predict import predictor
from segls.predict.files import mask_array, unique_names, write_mask
from segls.predict.pictures import overlay

PALETTE = [[10, 20, 30], [200, 0, 0], [0, 250, 5]]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path):
    """(config path, checkpoint path, Config, model, folder of inputs) with awkward inputs."""
    data = write_dataset(tmp_path / "data")
    cfg = tiny_config(data, data={"palette": PALETTE})
    config_path = tmp_path / "tiny.yaml"
    config.dump(cfg, config_path)
    model = save_checkpoint(cfg, tmp_path / "best.pth")
    inputs = tmp_path / "in"
    (inputs / "a").mkdir(parents=True)
    (inputs / "b").mkdir()
    val = data / "images" / "val"
    (inputs / "a" / "x.tif").write_bytes((val / "s0.tif").read_bytes())
    (inputs / "b" / "x.tif").write_bytes((val / "s1.tif").read_bytes())
    tifffile.imwrite(inputs / "b" / "odd.tif", tifffile.imread(val / "s0.tif")[3:24, 1:32])
    (inputs / "b" / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(inputs / "gray.png")
    return config_path, tmp_path / "best.pth", cfg, model, inputs


def expected_mask(model, cfg, path: Path, stride: int = 8) -> np.ndarray:
    """Class indices by hand: normalise, reflect-pad to the stride with NumPy, forward, crop."""
    image = tifffile.imread(path).astype(np.float64) / 65535.0
    image = (image - np.array(cfg.data.mean)) / np.array(cfg.data.std)
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, -height % stride), (0, -width % stride), (0, 0)), mode="reflect")
    with torch.no_grad():
        logits = model(torch.from_numpy(padded.transpose(2, 0, 1)[None].copy()).float())
    return logits[0, :, :height, :width].argmax(0).numpy()


def test_infer_writes_masks_and_overlays_and_reports_bad_inputs(setup, tmp_path, capsys):
    config_path, checkpoint_path, cfg, model, inputs = setup
    out = tmp_path / "out"
    args = [str(config_path), str(checkpoint_path), str(inputs), str(tmp_path / "missing.tif")]
    code = infer_cli.main([*args, "--out", str(out), "--alpha", "1"])
    assert code == 1
    errors = capsys.readouterr().err
    for name in ("broken.tif", "gray.png", "missing.tif"):
        assert name in errors
    assert "data.in_channels=2" in errors  # the grayscale image, as training would say

    written = sorted(path.name for path in out.iterdir())
    names = ["a_x", "b_x", "odd"]  # the two x.tif do not overwrite each other
    assert written == sorted(f"{name}_{kind}.png" for name in names for kind in ("mask", "overlay"))
    sources = [inputs / "a" / "x.tif", inputs / "b" / "x.tif", inputs / "b" / "odd.tif"]
    for name, source in zip(names, sources, strict=True):
        mask_image = Image.open(out / f"{name}_mask.png")
        mask = np.array(mask_image)
        expected = expected_mask(model, cfg, source)
        assert mask_image.mode == "P" and mask_image.getpalette()[:9] == sum(PALETTE, [])
        assert mask.dtype == np.uint8 and mask.shape == tifffile.imread(source).shape[:2]
        assert np.array_equal(mask, expected), name
        overlay = np.array(Image.open(out / f"{name}_overlay.png").convert("RGB"))
        assert np.array_equal(overlay, np.array(PALETTE, np.uint8)[expected])  # alpha 1: colours
    assert len({(out / f"{name}_mask.png").read_bytes() for name in names[:2]}) == 2


def test_same_size_images_are_batched_without_changing_the_results(setup, tmp_path, monkeypatch):
    config_path, checkpoint_path, _, _, inputs = setup
    for bad in ("b/broken.tif", "gray.png"):
        (inputs / bad).unlink()
    (inputs / "c.tif").write_bytes((inputs / "a" / "x.tif").read_bytes())
    tool = infer_cli
    shapes = []
    real_predict = predictor.predict_classes

    def recording_predict(model, images, *args):
        shapes.append(tuple(images.shape))
        return real_predict(model, images, *args)

    monkeypatch.setattr(predictor, "predict_classes", recording_predict)
    paths = [str(config_path), str(checkpoint_path), str(inputs)]
    assert tool.main([*paths, "--out", str(tmp_path / "two"), "--batch-size", "2"]) == 0
    # Files in order: a/x, b/odd, b/x, c: a/x and b/x (32×32) make the first batch; the
    # rest (c, 32×32, and odd, 21×31) are predicted at the end.
    assert shapes[0] == (2, 2, 32, 32)
    assert sorted(shapes[1:]) == [(1, 2, 21, 31), (1, 2, 32, 32)]
    assert tool.main([*paths, "--out", str(tmp_path / "one"), "--batch-size", "1"]) == 0
    for path in (tmp_path / "one").iterdir():
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name


def test_slide_mode_reads_windows_yet_writes_what_the_whole_normalised_image_gives(setup, tmp_path):
    # Each window is normalised from the stored uint16 pixels: the files must equal those made
    # from the whole normalised image (the percentile bounds are the whole image's).
    config_path, checkpoint_path, cfg, model, _ = setup
    cfg.data.scaling = "percentile"
    config.dump(cfg, config_path)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 65535, (70, 90, 2), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "wide.tif", image)
    slide = ["--mode", "slide", "--crop", "32", "40", "--stride", "20", "30"]
    out = tmp_path / "out"
    paths = [str(config_path), str(checkpoint_path), str(tmp_path / "wide.tif")]
    assert infer_cli.main([*paths, "--out", str(out), *slide]) == 0

    whole = build_transform(cfg.data, train=False)(image)[0]
    settings = InferenceSettings("slide", crop_size=(32, 40), stride=(20, 30))
    ids, _ = predict_classes(model, whole[None], settings)
    assert np.array_equal(read_mask(out / "wide_mask.png"), ids[0].numpy())
    shown = overlay(whole, ids[0], PALETTE, cfg.data.mean, cfg.data.std, 0.5)
    assert np.array_equal(np.array(Image.open(out / "wide_overlay.png")), shown)


def test_masks_are_palette_pngs_unless_raw(tmp_path):
    prediction = torch.tensor([[0, 2, 2], [1, 0, 2]])
    write_mask(tmp_path / "palette.png", prediction, PALETTE)
    image = Image.open(tmp_path / "palette.png")
    assert image.mode == "P" and np.array(image).tolist() == prediction.tolist()  # the ids
    shown = np.array(image.convert("RGB"))  # what an image viewer displays
    assert shown.tolist() == np.array(PALETTE)[prediction.numpy()].tolist()
    assert read_mask(tmp_path / "palette.png").tolist() == prediction.tolist()
    write_mask(tmp_path / "raw.png", prediction, PALETTE, raw=True)
    raw = Image.open(tmp_path / "raw.png")
    assert raw.mode == "L" and np.array(raw).tolist() == prediction.tolist()
    many = [[index % 256, index // 256, 0] for index in range(300)]
    write_mask(tmp_path / "many.png", torch.tensor([[299, 3]]), many)
    assert read_mask(tmp_path / "many.png").tolist() == [[299, 3]]
    assert Image.open(tmp_path / "many.png").mode.startswith("I")  # 16-bit greyscale


def test_masks_are_16_bit_above_256_classes(tmp_path):
    prediction = torch.tensor([[0, 299], [256, 7]])
    mask = mask_array(prediction, 300)
    assert mask.dtype == np.uint16
    (tmp_path / "m.png").write_bytes(encode_png(mask))
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 299], [256, 7]]  # the dataset reader
    assert mask_array(torch.tensor([[255]]), 256).dtype == np.uint8


def test_unique_names_prefix_folders_only_where_stems_clash():
    paths = [Path(p) for p in ("a/x.png", "b/x.tif", "c/y.png", "/abs/q/X.png", "d/x_2.png")]
    assert unique_names(paths) == ["a_x", "b_x", "y", "q_X", "x_2"]
    assert unique_names([Path("s/x.png"), Path("s/x.tif")]) == ["s_x", "s_x_2"]


# ---- checkpoint weights for inference ------------------------------------------------


def test_load_weights_prefers_ema_then_model_then_a_bare_state_dict(tmp_path):
    cfg = tiny_config(tmp_path)
    wanted = save_checkpoint(cfg, tmp_path / "ema.pth")
    fresh = build_model(cfg.model, 2, 3)
    assert checkpoint.load_weights(fresh, tmp_path / "ema.pth") == "ema"
    for key, value in wanted.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    plain = save_checkpoint(cfg, tmp_path / "plain.pth", ema=False)
    assert checkpoint.load_weights(fresh, tmp_path / "plain.pth") == "model"
    torch.save({"module." + k: v for k, v in plain.state_dict().items()}, tmp_path / "ddp.pth")
    assert checkpoint.load_weights(fresh, tmp_path / "ddp.pth") == "state_dict"
    for key, value in plain.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    torch.save({"note": "hello"}, tmp_path / "other.pth")
    with pytest.raises(checkpoint.CheckpointError, match=r"other.pth.*not a state dict.*note"):
        checkpoint.load_weights(fresh, tmp_path / "other.pth")


def test_a_checkpoint_of_another_model_names_the_mismatched_keys(tmp_path):
    cfg = tiny_config(tmp_path)
    save_checkpoint(cfg, tmp_path / "unet3.pth")
    four_classes = build_model(cfg.model, 2, 4)
    before = copy.deepcopy(four_classes.state_dict())
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load_weights(four_classes, tmp_path / "unet3.pth")
    message = str(error.value)
    assert "shape mismatches (2)" in message
    assert "segmentation_head.0.weight (3, 8, 3, 3) in the checkpoint, (4, 8, 3, 3)" in message
    assert "segmentation_head.0.bias (3,) in the checkpoint, (4,) in the model" in message
    assert "missing" not in message and "unexpected" not in message
    for key, value in four_classes.state_dict().items():
        assert torch.equal(value, before[key]), key  # left untouched

    fpn_cfg = dataclasses_replace_model(cfg, arch="FPN", kwargs={"encoder_depth": 3})
    fpn = build_model(fpn_cfg.model, 2, 3)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load_weights(fpn, tmp_path / "unet3.pth")
    message = str(error.value)
    assert (
        "ema weights" in message and "missing keys (" in message and "unexpected keys (" in message
    )
    assert "decoder.blocks.0" in message  # a Unet decoder key the FPN does not have
    assert "config.yaml" in message

    config_path = tmp_path / "fpn.yaml"
    config.dump(fpn_cfg, config_path)
    with pytest.raises(checkpoint.CheckpointError, match="unexpected keys"):
        infer_cli.main([str(config_path), str(tmp_path / "unet3.pth"), ".", "--out", "o"])


def dataclasses_replace_model(cfg: config.Config, **changes) -> config.Config:
    """A copy of `cfg` with model keys changed."""
    tree = config.to_dict(cfg)
    tree["model"].update(changes)
    return config.from_dict(tree)


def test_infer_writes_nothing_for_a_nan_prediction_names_the_image_and_exits_1(
    setup, tmp_path, capsys
):
    config_path, checkpoint_path, cfg, _, _ = setup
    inputs = tmp_path / "nan_inputs"
    inputs.mkdir()
    source = Path(cfg.data.root) / "images" / "val" / "s0.tif"
    image = tifffile.imread(source).astype(np.float32) / 65535  # a float image in [0, 1]
    tifffile.imwrite(inputs / "good.tif", image)
    image[5:15, 5:15] = np.nan
    tifffile.imwrite(inputs / "patchy.tif", image)
    out = tmp_path / "out"
    assert (
        infer_cli.main([str(config_path), str(checkpoint_path), str(inputs), "--out", str(out)])
        == 1
    )
    errors = capsys.readouterr().err
    assert (
        f"skipped {inputs / 'patchy.tif'}: its prediction holds NaN or inf, so no files" in errors
    )
    assert sorted(path.name for path in out.iterdir()) == ["good_mask.png", "good_overlay.png"]


def run_limited(limit_mb: float, warmup: Path, argv: list[str]) -> subprocess.Popen:
    """tests/infer_memory.py in a child: tools/infer.py `argv` with `limit_mb` MiB to spare."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    command = [sys.executable, str(REPO / "tests" / "infer_memory.py"), str(limit_mb), str(warmup)]
    return subprocess.Popen(
        [*command, "--", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_an_image_too_large_for_memory_is_named_and_skipped_and_slide_mode_fits(setup, tmp_path):
    # Whole-image prediction of a 1000x1000 2-channel uint16 image (4 MiB) needs about 200 MiB
    # more than the process holds before it. Slide mode of a 3000x3000 one (34 MiB) peaks at
    # about 170 MiB: the image stays uint16 and is normalised a window at a time. Normalising
    # it whole, as before, peaked at 242 MiB and failed to read it under this 200 MiB limit.
    config_path, checkpoint_path, _, _, inputs = setup
    big, huge = tmp_path / "big.tif", tmp_path / "huge.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(big, rng.integers(0, 65535, (1000, 1000, 2), dtype=np.uint16))
    tifffile.imwrite(huge, rng.integers(0, 65535, (3000, 3000, 2), dtype=np.uint16))
    small, paths = inputs / "a" / "x.tif", [str(config_path), str(checkpoint_path)]
    whole = run_limited(130, small, [*paths, str(big), str(small), "--out", str(tmp_path / "w")])
    slide_args = ["--mode", "slide", "--crop", "256", "256", "--stride", "200", "200"]
    slide = run_limited(200, small, [*paths, str(huge), "--out", str(tmp_path / "s"), *slide_args])
    whole_out, whole_err = whole.communicate(timeout=300)
    assert "Traceback" not in whole_err, whole_err
    assert json.loads(whole_out.splitlines()[-1])["code"] == 1
    assert f"skipped {big}: not enough memory to predict this 1000x1000 image" in whole_err
    assert sorted(path.name for path in (tmp_path / "w").iterdir()) == [
        "x_mask.png", "x_overlay.png",
    ]  # fmt: skip
    slide_out, slide_err = slide.communicate(timeout=600)
    assert "Traceback" not in slide_err, slide_err
    assert json.loads(slide_out.splitlines()[-1])["code"] == 0  # within the 200 MiB limit
    assert read_mask(tmp_path / "s" / "huge_mask.png").shape == (3000, 3000)
    assert np.array(Image.open(tmp_path / "s" / "huge_overlay.png")).shape == (3000, 3000, 3)
