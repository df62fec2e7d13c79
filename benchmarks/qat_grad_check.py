"""How far QAT's float32 gradients are from float64's: eager PyTorch against torch.compile.

Run: .venv/bin/python benchmarks/qat_grad_check.py [--windows 0,10,18]
The default model, W2A4 MPQ-DM's PTQ initialisation; for a few TRD windows of one FP trajectory,
one forward and backward of the fast path's window loss (output distillation + 100 x TRD) in
float64 (the reference), in float32 eagerly, and in float32 under torch.compile: all of it, the
student only, the TRD term only, or all but the fake quantizers. Per window: the
loss, and the gradient's relative error over all trained parameters, ||g - g64|| / ||g64||.
Writes benchmarks/results/qat_grad_check.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from pathlib import Path

import torch

from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.qat.config import QATConfig, trainable
from mpqdm.frontend.qat.dist import World
from mpqdm.frontend.qat.source import load_start
from mpqdm.frontend.qat.teacher import run_teacher
from mpqdm.frontend.qat.train import noise_for
from mpqdm.frontend.qat.trd import FeatureTap, last_decoder_block, trd_loss
from mpqdm.frontend.quant import quantizer
from mpqdm.frontend.quant.ptq import PTQConfig
from mpqdm.frontend.quant.quantizer import FakeQuant
from mpqdm.frontend.quant.swap import set_step
from mpqdm.frontend.sampling import ddim_schedule
from mpqdm.testing.bench import markdown_table, save_rows

RESULTS = Path(__file__).resolve().parent / "results"


def window_grads(model, tap, trd, steps, sched, w0: int, k: int, dtype, module) -> tuple[float, dict]:
    for p in module.parameters():
        p.grad = None
    b = steps.x.shape[1]
    set_step(module, torch.arange(w0, w0 + k).repeat_interleave(b))
    t = torch.as_tensor(sched.timesteps[w0:w0 + k].copy()).repeat_interleave(b)
    eps = model(steps.x[w0:w0 + k].flatten(0, 1).to(dtype), t).sample
    loss = (eps - steps.eps[w0:w0 + k].flatten(0, 1).to(dtype)).pow(2).flatten(1).sum(1).view(k, b).mean(1).sum()
    f = tap.pop().unflatten(0, (k, b))
    loss = loss + 100.0 * trd(list(steps.feats[w0:w0 + k].to(dtype).unbind(0)), list(f.unbind(0)))
    loss.backward()
    return float(loss.detach()), {n: p.grad.double().clone() for n, p in module.named_parameters()
                                  if p.grad is not None}


class _EagerFakeQuant:
    """Stands for FakeQuant in the quantizers' module: torch.compile does not trace into it."""
    apply = staticmethod(torch.compiler.disable(FakeQuant.apply))


@contextlib.contextmanager
def eager_fake_quant(on: bool):
    """torch.compile leaves every FakeQuant to eager PyTorch (a graph break at each)."""
    if on:
        quantizer.FakeQuant = _EagerFakeQuant
    try:
        yield
    finally:
        quantizer.FakeQuant = FakeQuant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", default="0,10,18", help="first steps of the windows (window 2)")
    ap.add_argument("--runs", default="all", help="runs beside float64, ';'-separated, or all")
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    start = load_start(DEFAULT_MODEL, PTQConfig(plan="omq", wbits=2, abits=4, omq_fractions=(0.1,)),
                       progress=False)
    cfg = QATConfig(batch=8, trd_weight=100.0)
    sched = ddim_schedule(start.scheduler.alphas_cumprod, len(start.timesteps),
                          start.scheduler.config.num_train_timesteps)
    teacher = start.teacher.eval().requires_grad_(False)
    steps = run_teacher(teacher, noise_for(cfg, 0, World(), (8, 1, 32, 32)), sched,
                        FeatureTap(last_decoder_block(teacher)))
    q = start.student.train()
    trainable(q, cfg)
    q64 = copy.deepcopy(q).double()
    tap = FeatureTap(last_decoder_block(q))
    runs = {"float64": lambda: (q64, FeatureTap(last_decoder_block(q64)), trd_loss, torch.float64, q64),
            "float32 eager": lambda: (q, tap, trd_loss, torch.float32, q),
            "float32 torch.compile": lambda: (torch.compile(q, dynamic=False), tap, torch.compile(trd_loss),
                                              torch.float32, q),
            "float32 compile, student only": lambda: (torch.compile(q, dynamic=False), tap, trd_loss,
                                                      torch.float32, q),
            "float32 compile, TRD only": lambda: (q, tap, torch.compile(trd_loss), torch.float32, q),
            "float32 compile, fake-quant eager": lambda: (torch.compile(q, dynamic=False), tap,
                                                          torch.compile(trd_loss), torch.float32, q)}
    names = list(runs) if args.runs == "all" else ["float64", *args.runs.split(";")]
    rows, res = [], {}
    for name in names:                        # one run at a time: each compiles afresh
        torch._dynamo.reset()
        m, tap_, trd, dt, mod = runs[name]()
        with eager_fake_quant(name.endswith("fake-quant eager")):
            res[name] = {w0: window_grads(m, tap_, trd, steps, sched, w0, 2, dt, mod) for w0 in windows}
    for w0 in windows:
        ref = res["float64"][w0][1]
        den = sum(float(g.pow(2).sum()) for g in ref.values()) ** 0.5
        for name in names:
            loss, g = res[name][w0]
            err = sum(float((g[n] - ref[n]).pow(2).sum()) for n in ref) ** 0.5 / den
            rows.append({"window_start": w0, "run": name, "loss": round(loss, 3), "grad_rel_error": round(err, 5)})
            print(rows[-1], flush=True)
    save_rows(RESULTS / "qat_grad_check.json", rows, config="W2A4 OMQ(10%) + TRD(100, window 2), batch 8",
              torch=torch.__version__)
    (RESULTS / "qat_grad_check.md").write_text(
        "# QAT gradients in float32 against float64 (default model, W2A4 MPQ-DM, one window's loss)\n\n"
        "Command: `.venv/bin/python benchmarks/qat_grad_check.py`\n\n"
        + markdown_table(rows, ["window_start", "run", "loss", "grad_rel_error"]))


if __name__ == "__main__":
    main()
