"""Data-parallel QAT: two gloo processes on a tiny model end with the same parameters."""

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_two_processes_end_with_the_same_parameters(tiny_unet_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "ddp_worker.py"), str(tiny_unet_dir), str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the ranks saw different noise, so training moved the shared parameters by the averaged gradient
    assert (tmp_path / "export" / "quant_export.json").is_file()
    assert (tmp_path / "export.qat" / "checkpoint.pt").is_file()
