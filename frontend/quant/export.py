"""The quantized export (format owner): a diffusers folder plus the quantizer state.

<folder>/config.json, diffusion_pytorch_model.safetensors   the (trained) FP weights
<folder>/scheduler_config.json                               the training scheduler
<folder>/quant_plan.json                                     the BitPlan
<folder>/quant_export.json    {"format": "mpqdm.qexport", "version": 1, "source_sha256",
                               "n_steps", "timesteps", "method", "smoothing", "fp_ops", "layers"}
<folder>/quant_params.safetensors, per quantized layer L (channel-indexed tensors in PLAN order):
  L.wcodes uint8 [c_out, c_in(, kh, kw)]  weight codes in 0..2^b-1
  L.wstep  float32 [c_out], L.wzero int32 [c_out]       w = (code - zero) * step
  L.bias   float32 [c_out]                               (absent when the layer has none)
  L.astep  float32 [n_steps], L.azero int32 [n_steps]    input codes per sampling step
  L.smooth float32 [c_in]                                input is divided by it before quantizing
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mpqdm.core.bitplan import BitPlan, FloatLayer
from mpqdm.core.errors import UserError
from mpqdm.core.io import (
    check_output_dir,
    ensure_writable_dir,
    read_versioned_json,
    replace_dir,
    staging_dir,
    write_json,
)

from ..model_io import load_scheduler, load_unet
from .swap import FP_OPS, dequantize_model, quant_layers, quantize_model

FORMAT, VERSION = "mpqdm.qexport", 1


def layer_meta(layer) -> dict:
    fp = layer.fp
    meta = {"kind": "conv2d" if layer.is_conv else "linear", "c_out": fp.weight.shape[0],
            "c_in": fp.weight.shape[1], "abits": layer.aq.bits, "bias": fp.bias is not None}
    if layer.is_conv:
        meta.update(kernel=list(fp.kernel_size), stride=list(fp.stride), padding=list(fp.padding))
    return meta


def check_export_dir(out_dir, command: str, reads=()) -> Path:
    """The export folder `command` may write (core/io.py check_output_dir): call it before calibrating."""
    out = check_output_dir(out_dir, command, reads, legacy="quant_export.json")
    ensure_writable_dir(out.parent)
    return out


def export(qunet, plan: BitPlan, out_dir: str | Path, *, source_sha256: str, timesteps: list[int],
           method: str, scheduler, command: str = "quantize") -> Path:
    """Write the export atomically (a staging folder renamed into place)."""
    out_dir = check_export_dir(out_dir, command)
    if any(layer.lora is not None for layer in quant_layers(qunet).values()):
        raise ValueError("merge the LoRA adapters into the weights before exporting")
    staging = staging_dir(out_dir)
    tensors, layers = {}, {}
    for name, layer in quant_layers(qunet).items():
        order = torch.tensor(plan.layers[name].order, dtype=torch.int64, device=layer.smooth.device)
        ws = layer.smoothed_weight().detach()
        tensors[f"{name}.wcodes"] = layer.wq.codes(ws)[order].to(torch.uint8)
        tensors[f"{name}.wstep"] = layer.wq.step.detach()[order].float()
        tensors[f"{name}.wzero"] = layer.wq.zero_points()[order].to(torch.int32)
        if layer.fp.bias is not None:
            tensors[f"{name}.bias"] = layer.fp.bias.detach()[order].float()
        tensors[f"{name}.astep"] = layer.aq.step.detach().float()
        tensors[f"{name}.azero"] = layer.aq.zero.detach().round().to(torch.int32)
        tensors[f"{name}.smooth"] = layer.smooth.detach().float()
        layers[name] = layer_meta(layer)
    n_steps = len(timesteps)
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(staging / "quant_params.safetensors"))
    fp = dequantize_model(copy.deepcopy(qunet)).to("cpu")
    fp.save_pretrained(staging)
    scheduler.save_pretrained(staging)
    plan.save(staging / "quant_plan.json")
    write_json(staging / "quant_export.json", {
        "format": FORMAT, "version": VERSION, "source_sha256": source_sha256, "n_steps": n_steps,
        "timesteps": [int(t) for t in timesteps], "method": method, "smoothing": plan.smoothing,
        "fp_ops": list(FP_OPS), "float_layers": sorted(n for n, lp in plan.layers.items()
                                                       if isinstance(lp, FloatLayer)),
        "layers": layers})
    replace_dir(staging, out_dir, command)
    return out_dir


def is_export(path: str | Path) -> bool:
    return (Path(path) / "quant_export.json").is_file()


PARAMS = ("wcodes", "wstep", "wzero", "astep", "azero", "smooth")     # per quantized layer (and bias)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of the export; a missing, truncated or corrupt one is named."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types)
        raise UserError(f"cannot read {str(path)!r} ({type(exc).__name__}: {exc}). Possible solutions: "
                        "re-export the model with mpqdm quantize or mpqdm qat") from None


def read_meta(path: str | Path) -> dict:
    return read_versioned_json(Path(path) / "quant_export.json", FORMAT, VERSION, "re-run mpqdm quantize")


def load_export(path: str | Path):
    """-> (fake-quant UNet with the exported state, plan, meta, tensors, scheduler)."""
    path = Path(path)
    meta = read_meta(path)
    unet = load_unet(path)
    plan = BitPlan.load(path / "quant_plan.json")
    tensors = read_tensors(path / "quant_params.safetensors")
    quantize_model(unet, plan, meta["n_steps"])
    with torch.no_grad():
        for name, layer in quant_layers(unet).items():
            missing = [k for k in PARAMS if f"{name}.{k}" not in tensors]
            if missing:
                raise UserError(f"export {str(path)!r}: quant_params.safetensors lacks {name}.{missing[0]}. "
                                "Possible solutions: re-export it")
            order = torch.tensor(plan.layers[name].order, dtype=torch.int64)
            layer.smooth.copy_(tensors[f"{name}.smooth"])
            layer.wq.step[order] = tensors[f"{name}.wstep"]
            layer.wq.zero[order] = tensors[f"{name}.wzero"].float()
            layer.aq.step.copy_(tensors[f"{name}.astep"])
            layer.aq.zero.copy_(tensors[f"{name}.azero"].float())
            codes = layer.wq.codes(layer.smoothed_weight())[order]
            if not torch.equal(codes, tensors[f"{name}.wcodes"].to(torch.int64)):
                raise UserError(f"export {str(path)!r}: layer {name!r} weight codes do not match its weights; "
                                "the folder was changed by hand. Possible solutions: re-export it")
    return unet, plan, meta, tensors, load_scheduler(path)


def avg_wbits(export_dir: str | Path) -> float:
    """Average weight bits of an export's plan, each channel weighted by its number of weights."""
    from .swap import quant_targets

    unet = load_unet(export_dir)
    wpc = {n: m.weight[0].numel() for n, m in quant_targets(unet).items()}
    return BitPlan.load(Path(export_dir) / "quant_plan.json").avg_wbits(wpc)
