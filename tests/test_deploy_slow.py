"""`mpqdm deploy` of the default model to the Pis: aarch64 binaries that run under qemu with the
board's CPU and agree with the host build (slow: two compiles per board and qemu runs)."""

import pytest

from mpqdm.deploy.pipeline import DeployConfig, deploy

pytestmark = pytest.mark.slow


def program_header_types(elf: bytes) -> list[int]:
    """p_type of every program header of a little-endian ELF64 file."""
    off, size, n = (int.from_bytes(elf[a:b], "little") for a, b in ((32, 40), (54, 56), (56, 58)))
    return [int.from_bytes(elf[off + i * size: off + i * size + 4], "little") for i in range(n)]


@pytest.mark.parametrize("board", ["rpi4", "rpi5"])
def test_pi_deploy_agrees_with_the_host_build(board, tmp_path):
    cfg = DeployConfig(board=board, qat_iterations=0, fd_samples=16, calib_samples=8)
    info = deploy(None, tmp_path / board, cfg, progress=False)
    elf = (tmp_path / board / "mpqdm-run").read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183      # EM_AARCH64
    assert 3 not in program_header_types(elf)                                          # static: no PT_INTERP
    chk = info["check"]
    assert chk["emulated"] and f"-cpu {'cortex-a72' if board == 'rpi4' else 'cortex-a76'}" in chk["runner"]
    assert chk["identical_to_host"], chk["host_agreement"]
    assert chk["median_rel_error"] <= chk["bound"]
