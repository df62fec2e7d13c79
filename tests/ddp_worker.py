"""Run by test_qat_ddp under torchrun: a short QAT, then each rank saves its parameters."""

import sys

import torch

from mpqdm.frontend.qat.config import QATConfig
from mpqdm.frontend.qat.train import qat
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.ptq import PTQConfig

model, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
info = qat(model, f"{out}/export", QATConfig(iterations=2, batch=4, ckpt_every=1),
           PTQConfig(wbits=2, abits=4, calib=CalibConfig(samples=4, steps=3, batch=4)), progress=False)
rank = torch.distributed.get_rank()
torch.save({k: v.detach().cpu() for k, v in info["model"].state_dict().items()}, f"{out}/rank{rank}.pt")
