"""The QAT loop: FP DDIM trajectories from noise, the quantized model distilled at every step.

Per step: loss = sum over pixels of (eps_q - eps_fp)^2, mean over the batch. Every `window` steps
(and at the trajectory's end) the TRD term of that window is added and the optimiser steps once.
Both models always see the FP trajectory's x_t. State lives in <out>.qat/ (checkpoint.pt,
losses.json, loss_curve.png); the final export goes to <out> in the frontend's format.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from mpqdm.core.errors import UserError
from mpqdm.core.io import atomic_torch_save, ensure_writable_dir, write_json

from ..device import pick_device
from ..quant.export import check_export_dir, export
from ..quant.ptq import PTQConfig, summary
from ..quant.swap import set_step
from ..sampling import ddim_schedule, ddim_step
from .config import QATConfig, keep_steps_positive, trainable
from .dist import World, barrier, init_world, local_device, wrap
from .fast import FastLoop
from .lora import add_lora, merge_lora
from .plot import plot_losses
from .source import QAT_METHOD, Start, load_start
from .teacher import TeacherCache, run_teacher
from .trd import FeatureTap, last_decoder_block, trd_loss

CKPT_FORMAT, CKPT_VERSION = "mpqdm.qat_checkpoint", 1


def run_dir(out: Path) -> Path:
    return out.with_name(out.name + ".qat")


def noise_for(cfg: QATConfig, it: int, world: World, shape) -> torch.Tensor:
    """The iteration's starting noise: fixed by (seed, iteration, rank), so a resumed run repeats it."""
    g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + it) * 64 + world.rank)
    return torch.randn(shape, generator=g)


def _check_resume(ck: dict, cfg: QATConfig, start: Start, path: Path) -> None:
    if ck.get("format") != CKPT_FORMAT or ck.get("version") != CKPT_VERSION:
        raise UserError(f"{path} is not a v{CKPT_VERSION} QAT checkpoint. Possible solutions: delete {path.parent}")
    saved = {**QATConfig().to_dict(), **ck["config"]}   # a setting added later: its default
    diff = [k for k, v in cfg.to_dict().items() if saved.get(k) != v]
    if diff:
        raise UserError(f"the run in {path.parent} used other settings ({', '.join(diff)}): "
                        f"{ {k: saved.get(k) for k in diff} }. Possible solutions: the same "
                        "settings with --resume, or a new --out")
    if ck["source_sha256"] != start.source_sha256 or ck["plan"] != start.plan.to_json():
        raise UserError(f"the run in {path.parent} started from another model or plan. "
                        "Possible solutions: a new --out")


def prepare(teacher, q, cfg: QATConfig, fast: bool):
    """The models as qat() trains them (teacher frozen; channels-last on the fast path; LoRA), and
    their optimiser and TRD feature taps (None without TRD)."""
    teacher.eval().requires_grad_(False)
    if fast:    # before the optimiser exists: the conversion replaces the parameters' data
        teacher.to(memory_format=torch.channels_last)
        q.to(memory_format=torch.channels_last)
    if cfg.lora_rank:
        add_lora(q, cfg.lora_rank)
    q.train()
    opt = torch.optim.AdamW(trainable(q, cfg), fused=fast or None)
    taps = (FeatureTap(last_decoder_block(teacher, cfg.trd_block)),
            FeatureTap(last_decoder_block(q, cfg.trd_block))) if cfg.trd_weight else None
    return opt, taps


COMPILE_REFUSED = ("--compile is refused: under torch.compile (inductor, CPU) a compiled decoder block passes "
                   "no gradient back to its inputs, so on the default model 199 of 275 trained parameters "
                   "get none and train nothing (benchmarks/results/qat_compile_check.md). Possible "
                   "solutions: leave out --compile (the eager fast path trains every layer)")


def qat(source, out, cfg: QATConfig = QATConfig(), ptq: PTQConfig = PTQConfig(), plan_file=None,
        teacher_dir=None, resume: bool = False, device: str = "auto", progress: bool = True,
        stop_after: int | None = None, fast: bool = True, compile_: bool = False,
        teacher_cache: str | Path | None = None) -> dict:
    """Train, checkpoint every cfg.ckpt_every iterations, export to `out`. `stop_after` (tests) ends
    the process's work after that many iterations in total, as an interruption would. `fast`: the
    same loss by frontend.qat.fast (`compile_`: refused, torch.compile's gradients are wrong:
    benchmarks/qat_compile_check.py);
    `teacher_cache`: a folder where the teacher's trajectories are kept and shared with other runs
    of the same model and seed (fast path)."""
    if compile_:
        raise UserError(COMPILE_REFUSED)
    world = init_world()
    out = check_export_dir(out, "qat", reads=[source, teacher_dir])
    rdir = run_dir(out)
    ckpt = rdir / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise UserError(f"a QAT run already exists in {rdir}. Possible solutions: --resume to continue it, "
                        "or delete that folder to start again")
    if resume and not ckpt.exists():
        raise UserError(f"--resume: there is no QAT run to resume in {rdir}. Possible solutions: leave out "
                        "--resume to start one")
    if cfg.batch % world.size:
        raise UserError(f"--batch {cfg.batch} does not split over {world.size} processes")
    if world.main:
        ensure_writable_dir(rdir)
    dev = local_device(world, pick_device(device))
    start = load_start(source, ptq, plan_file, teacher_dir, device=str(dev), progress=progress and world.main)
    teacher, q = start.teacher.to(dev), start.student.to(dev)
    opt, taps = prepare(teacher, q, cfg, fast)
    sched = ddim_schedule(start.scheduler.alphas_cumprod, len(start.timesteps),
                          start.scheduler.config.num_train_timesteps)
    if [int(t) for t in sched.timesteps] != [int(t) for t in start.timesteps]:
        raise UserError("the calibrated timesteps are not a DDIM schedule of this scheduler")
    n_steps = len(start.timesteps)
    windows = -(-n_steps // cfg.window)
    total = cfg.iterations * windows
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    first, losses, seconds = 0, [], 0.0
    if resume and ckpt.exists():
        ck = torch.load(ckpt, map_location=dev, weights_only=False)
        _check_resume(ck, cfg, start, ckpt)
        q.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        lr_sched.load_state_dict(ck["lr_schedule"])
        first, losses, seconds = ck["iteration"], ck["losses"], ck["seconds"]

    def save(it: int) -> None:
        if world.main:
            atomic_torch_save({"format": CKPT_FORMAT, "version": CKPT_VERSION, "iteration": it,
                               "config": cfg.to_dict(), "source_sha256": start.source_sha256,
                               "plan": start.plan.to_json(), "model": q.state_dict(),
                               "optimizer": opt.state_dict(), "lr_schedule": lr_sched.state_dict(),
                               "losses": losses, "seconds": seconds}, ckpt)
            write_json(rdir / "losses.json", {"iterations": it, "seconds": round(seconds, 1), "losses": losses})

    fwd = wrap(world, q)     # after the resume: DDP broadcasts rank 0's loaded state
    c = q.config
    shape = (cfg.batch // world.size, c.in_channels, c.sample_size, c.sample_size)
    loop = FastLoop(q, fwd, taps[1] if taps else None, cfg, teacher=teacher) if fast else None
    cache = None
    if fast and teacher_cache is not None:
        cache = TeacherCache(teacher_cache, {
            "model_sha256": start.source_sha256, "seed": cfg.seed, "shape": list(shape), "rank": world.rank,
            "processes": world.size, "timesteps": [int(t) for t in sched.timesteps], "clip": sched.clip,
            "tap": f"up_blocks[{cfg.trd_block}]", "device": dev.type, "channels_last": True})
    bar = tqdm(range(first, cfg.iterations), initial=first, total=cfg.iterations, desc="qat",
               disable=not (progress and world.main))
    try:
        for it in bar:
            t0 = time.perf_counter()
            noise = noise_for(cfg, it, world, shape).to(dev)
            if loop is None:
                out_sum, trd_sum = _trajectory(teacher, q, fwd, taps, noise, sched, cfg, opt, lr_sched)
            else:
                def teach(noise=noise):
                    return run_teacher(loop.teacher, noise, sched, taps[0] if taps else None)
                steps = cache.get(it, taps is not None, teach) if cache else teach()
                out_sum, trd_sum = loop.trajectory(steps, sched, opt, lr_sched)
            seconds += time.perf_counter() - t0
            losses.append({"iteration": it + 1, "out": out_sum / n_steps, "trd": trd_sum / windows})
            bar.set_postfix(out=f"{out_sum / n_steps:.3g}", trd=f"{trd_sum / windows:.3g}")
            if (it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.iterations or it + 1 == stop_after:
                save(it + 1)
            if it + 1 == stop_after and it + 1 < cfg.iterations:
                return {"iterations": it + 1, "stopped": True}
    finally:
        if taps:
            for t in taps:
                t.close()
    barrier(world)
    info = {"iterations": cfg.iterations, "seconds": round(seconds, 1), "device": str(dev),
            "processes": world.size, "threads": torch.get_num_threads(), "fast": fast,
            "compiled": False, "final": losses[-1] if losses else None}
    if world.main:
        plot_losses(losses, rdir / "loss_curve.png")
        merge_lora(q)
        q.to(memory_format=torch.contiguous_format)
        export(q.eval(), start.plan, out, source_sha256=start.source_sha256, timesteps=start.timesteps,
               method=QAT_METHOD, scheduler=start.scheduler, command="qat")
        info.update(summary(q, start.plan), out=str(out), run_dir=str(rdir))
        write_json(rdir / "summary.json", {**info, "config": cfg.to_dict()})
    barrier(world)
    info["model"] = q
    return info


def _trajectory(teacher, q, fwd, taps, x, sched, cfg: QATConfig, opt, lr_sched):
    """One DDIM trajectory: distil at every step, step the optimiser once per window. `fwd` is the
    quantized model `q` or its DDP wrapper."""
    n_steps = len(sched.timesteps)
    out_sum = trd_sum = 0.0
    loss, f_fp, f_q = 0.0, [], []
    for i, t in enumerate(sched.timesteps):
        tt = torch.full((x.shape[0],), int(t), device=x.device)
        with torch.no_grad():
            eps_fp = teacher(x, tt).sample
        set_step(q, i)
        eps_q = fwd(x, tt).sample
        step_loss = (eps_q - eps_fp).pow(2).flatten(1).sum(1).mean()
        loss = loss + step_loss
        out_sum += float(step_loss.detach())
        if taps:
            f_fp.append(taps[0].pop().detach())
            f_q.append(taps[1].pop())
        if (i + 1) % cfg.window == 0 or i + 1 == n_steps:
            if taps:
                rel = trd_loss(f_fp, f_q)
                trd_sum += float(rel.detach())
                loss = loss + cfg.trd_weight * rel
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            keep_steps_positive(q)
            lr_sched.step()
            loss, f_fp, f_q = 0.0, [], []
        x = ddim_step(x, eps_fp, sched, i)
    return out_sum, trd_sum
