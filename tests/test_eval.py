import json

import numpy as np
import pytest
import torch
from PIL import Image

from mpqdm.core.errors import UserError
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.fp_model import default_unet

from .conftest import TINY_UNET

CFG = EvalConfig(samples=12, steps=3, batch=5)


def test_tiny_end_to_end_eval_and_resume(tiny_unet_dir, tmp_path):
    out = tmp_path / "ev"
    m = evaluate(tiny_unet_dir, out, CFG, device="cpu", progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == m
    assert m["samples"] == 12 and m["ddim_steps"] == 3
    # a random tiny UNet makes noise, far from digits; the real-vs-real floor is small
    assert np.isfinite(m["fd"]) and m["fd"] > 10 * m["fd_floor"] > 0
    grid = Image.open(out / "samples_grid.png")
    assert grid.size == ((8 * 34 + 2) * 3,) * 2
    parts = sorted((out / ".partial").rglob("batch*.npy"))
    assert [p.name for p in parts] == ["batch0000_n5.npy", "batch0001_n5.npy", "batch0002_n2.npy"]
    # interrupted run: drop the last batch; the rerun regenerates it identically
    last = np.load(parts[-1])
    parts[-1].unlink()
    m2 = evaluate(tiny_unet_dir, out, CFG, device="cpu", progress=False)
    np.testing.assert_array_equal(np.load(parts[-1]), last)
    assert m2["fd"] == m["fd"]


def test_missing_and_non_diffusers_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        evaluate(tmp_path / "nope", tmp_path / "o", CFG, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a diffusers model folder"):
        evaluate(tmp_path / "empty", tmp_path / "o", CFG, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(UserError, match="not a UNet2DModel"):
        evaluate(tmp_path / "other", tmp_path / "o", CFG, progress=False)


def test_wrong_shape_model_is_refused(tmp_path):
    torch.manual_seed(0)
    default_unet(**{**TINY_UNET, "in_channels": 3, "out_channels": 3}).save_pretrained(tmp_path / "rgb")
    with pytest.raises(UserError, match="1-channel 32x32"):
        evaluate(tmp_path / "rgb", tmp_path / "o", CFG, progress=False)


def test_non_writable_output(tiny_unet_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        evaluate(tiny_unet_dir, blocker / "sub", CFG, progress=False)
