"""What QAT starts from: an FP model (PTQ-initialised here with a plan) or a PTQ export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mpqdm.core.bitplan import BitPlan
from mpqdm.core.errors import UserError

from ..model_io import load_unet, model_fingerprint
from ..quant.export import is_export, load_export, read_meta
from ..quant.ptq import PTQConfig, prepare
from ..quant.swap import layer_shapes

QAT_METHOD = "qat"   # the export's "method" after QAT: its FP weights are no longer the source's


@dataclass
class Start:
    teacher: object        # FP UNet
    student: object        # fake-quant UNet (PTQ-initialised)
    plan: BitPlan
    timesteps: list[int]
    init_method: str
    scheduler: object
    source_sha256: str


def load_start(source: str | Path, ptq: PTQConfig, plan_file: str | Path | None = None,
               teacher_dir: str | Path | None = None, device: str = "auto", progress: bool = True) -> Start:
    if not Path(source).exists():
        raise UserError(f"{str(source)!r} does not exist. Possible solutions: a diffusers UNet2DModel "
                        "folder or an export from mpqdm quantize")
    if is_export(source):
        return _from_export(Path(source), plan_file, teacher_dir)
    p = prepare(source, ptq, plan_file, device, progress)
    teacher = load_unet(teacher_dir or source)
    if teacher_dir is not None and model_fingerprint(teacher_dir) != p.sha:
        raise UserError(f"teacher {str(teacher_dir)!r} is not the model {str(source)!r}")
    dev = next(p.qunet.parameters()).device
    return Start(teacher.to(dev), p.qunet, p.plan, p.calib.timesteps, ptq.method, p.scheduler, p.sha)


def _from_export(source: Path, plan_file, teacher_dir) -> Start:
    meta = read_meta(source)
    student, plan, meta, _, sched = load_export(source)
    if plan_file is not None:
        wanted = BitPlan.load(plan_file, layer_shapes=layer_shapes(student))
        if wanted.layers != plan.layers:
            raise UserError(f"the plan {str(plan_file)!r} differs from the one export {str(source)!r} was "
                            "made with. Possible solutions: leave out --plan, or start from the FP model "
                            "with this plan")
    if teacher_dir is None:
        if meta["method"] == QAT_METHOD:
            raise UserError(f"export {str(source)!r} was trained by QAT, so its weights are no longer the FP "
                            "model's. Possible solutions: --teacher FP_MODEL_DIR")
        teacher = load_unet(source)   # a PTQ export keeps the source's FP weights untouched
    else:
        if model_fingerprint(teacher_dir) != meta["source_sha256"]:
            raise UserError(f"teacher {str(teacher_dir)!r} is not the model export {str(source)!r} was made "
                            "from (different sha256)")
        teacher = load_unet(teacher_dir)
    return Start(teacher, student, plan, meta["timesteps"], meta["method"], sched, meta["source_sha256"])
