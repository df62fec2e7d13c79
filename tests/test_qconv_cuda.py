"""The CUDA quantized conv compiles to cubin for the Jetson Orin (sm_87) and the H100 (sm_90)."""

import shutil

import pytest

from mpqdm.backend_tvm.kernels.qconv_cuda import compile_cubin, cuda_source, kernel_signature
from mpqdm.core.scheme import ConvSpec

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
SPEC = ConvSpec(1, 7, 5, 8, 24, 3, 3, 1, 1, ((8, 3), (16, 2)), 4)


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_compiles_to_cubin(arch):
    src = cuda_source(SPEC, arch)
    name, params, threads = kernel_signature(src)
    assert threads == SPEC.c_out
    assert sorted(params) == sorted(["X", "Wp", "perm", "sw", "zw", "colsum", "bias", "act", "az", "Y"])
    cubin = compile_cubin(src, arch)
    assert cubin[:4] == b"\x7fELF" and name.encode() in cubin


def test_too_many_channels_for_one_block():
    with pytest.raises(ValueError, match="exceeds 1024"):
        cuda_source(ConvSpec(1, 2, 2, 4, 1032, groups=((1032, 2),)), "sm_90")
