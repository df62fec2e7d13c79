import os

import pytest
import torch

from mpqdm.testing.fixtures import TINY_UNET, tiny_export, tiny_unet  # noqa: F401  (TINY_UNET: tests import it)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(int(os.environ.get("MPQDM_TEST_THREADS", "2")))


@pytest.fixture
def parallel_small_layers(monkeypatch):
    """Kernel tests' odd shapes are small enough to run on one thread (qconv_dot.serial): this keeps their
    parallel launches (row chunks, merged groups) under test."""
    from mpqdm.backend_tvm.kernels import qconv_dot

    monkeypatch.setattr(qconv_dot, "SERIAL_MACS", 0)
    monkeypatch.setattr(qconv_dot, "SERIAL_MACS_AMX", 0)


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory):
    """A tiny random 1-channel 32x32 UNet2DModel saved as a diffusers folder with its scheduler."""
    return tiny_unet(tmp_path_factory.mktemp("tiny_unet"))


@pytest.fixture(scope="session")
def tiny_omq_export(tiny_unet_dir, tmp_path_factory):
    """PTQ export of the tiny UNet with OMQ's mixed 1/2/3-bit groups at A4 (3 calibrated steps)."""
    return tiny_export(tiny_unet_dir, tmp_path_factory.mktemp("exp") / "omq-w2a4")


@pytest.fixture(scope="session", params=[("uniform", 4, 8), ("omq", 2, 4)], ids=["W4A8", "OMQ-W2A4"])
def export_dir(request, tiny_unet_dir, tmp_path_factory):
    """PTQ exports of the tiny UNet: uniform W4A8, and OMQ W2A4 with groups of 2 channels."""
    plan, wb, ab = request.param
    return tiny_export(tiny_unet_dir, tmp_path_factory.mktemp("exp") / plan, plan, wb, ab)
