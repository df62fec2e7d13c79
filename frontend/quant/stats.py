"""Channel statistics (format owner): the allocator's input, written by `mpqdm stats`.

{"format": "mpqdm.stats", "version": 1, "model": {"sha256", "class"}, "method", "smoothing",
 "candidate_bits": [1..8], "abits": [4, 8], "calibration": {...},
 "layers": {name: {"kind": "conv2d" | "linear", "policy": "quant" | "w8a8" | "float",
                   "c_out", "c_in", "kernel", "stride", "padding", "weights_per_channel",
                   "shape": the kernel shape key of the latency table (backend_tvm.shapes.shape_key),
                   "macs": MACs per UNet call (batch 1), "kurtosis": [c_out],
                   "cost": {"4": [[c_out] per candidate bit-width], "8": [...]},
                   "sensitivity": d|eps|^2 / d|layer output|^2}}}
cost[a][k][c]: squared output error of channel c alone at candidate_bits[k] with a-bit inputs,
summed over the kept calibration inputs; additive over channels (any grouping is a sum).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from allocator.bitplan import LayerPlan
from mpqdm.io import read_versioned_json, write_json

from .calibrate import CalibConfig, CalibData, calibrate
from .layers import QuantLayer
from .omq import channel_costs, kurtosis
from .quantizer import StepIndex
from .ranges import init_layer
from .swap import LayerPolicy, _set, quant_targets

FORMAT, VERSION = "mpqdm.stats", 2     # v2: "shape", for the allocator's latency lookups
CANDIDATE_BITS = tuple(range(1, 9))


@torch.no_grad()
def macs_per_call(unet: nn.Module) -> dict[str, int]:
    macs, hooks = {}, []
    for name, m in quant_targets(unet).items():
        def fn(mod, args, y, name=name):
            per_out = mod.weight[0].numel()
            n_out = y.numel() // y.shape[0] if isinstance(mod, nn.Conv2d) else y.numel()
            macs[name] = macs.get(name, 0) + int(n_out * per_out)
        hooks.append(m.register_forward_hook(fn))
    c = unet.config
    dev = next(unet.parameters()).device
    unet(torch.zeros(1, c.in_channels, c.sample_size, c.sample_size, device=dev), torch.tensor([500], device=dev))
    for h in hooks:
        h.remove()
    return macs


@torch.no_grad()
def sensitivity(unet: nn.Module, name: str, calib: CalibData, method: str, smoothing: bool) -> float:
    """Gain from this layer's output error to the UNet's output error (W4A8 on this layer alone)."""
    model = copy.deepcopy(unet)
    fp = quant_targets(model)[name]
    idx = StepIndex()
    layer = QuantLayer(fp, torch.full((fp.weight.shape[0],), 4), 8, calib.config.steps, idx)
    init_layer(layer, calib.layers[name], method, smoothing)
    _set(model, name, layer)
    err_layer = [0.0]

    def hook(mod, args, y):
        err_layer[0] += float((y - mod.op(args[0], mod.fp.weight)).double().pow(2).sum())

    h = layer.register_forward_hook(hook)
    err_out = 0.0
    for step, (x, t) in calib.net_inputs.items():
        idx.value = step
        err_out += float((model(x, t).sample - unet(x, t).sample).double().pow(2).sum())
    h.remove()
    return err_out / max(err_layer[0], 1e-30)


@torch.no_grad()
def channel_stats(unet: nn.Module, sha: str, alphas_cumprod, calib_cfg: CalibConfig = CalibConfig(),
                  method: str = "mse", smoothing: bool = True, policy: LayerPolicy = LayerPolicy(),
                  progress: bool = True) -> dict:
    unet = unet.eval()
    calib = calibrate(unet, alphas_cumprod, calib_cfg, progress)
    macs = macs_per_call(unet)
    from backend_tvm.shapes import layer_specs, shape_key

    dev = next(unet.parameters()).device
    shapes = {name: shape_key(spec) for name, spec in layer_specs(unet.cpu()).items()}
    unet.to(dev)
    layers = {}
    targets = quant_targets(unet)
    for name, fp in tqdm(targets.items(), desc="stats", disable=not progress):
        c_out = fp.weight.shape[0]
        bits = LayerPlan.uniform(c_out, 8, 8).bits_per_channel()
        layer = QuantLayer(copy.deepcopy(fp), torch.tensor(bits), 8, calib_cfg.steps, StepIndex())
        init_layer(layer, calib.layers[name], method, smoothing)
        entry = {"kind": "conv2d" if layer.is_conv else "linear", "policy": policy.kind(name),
                 "c_out": c_out, "c_in": fp.weight.shape[1],
                 "weights_per_channel": fp.weight[0].numel(), "macs": macs[name], "shape": shapes[name],
                 "kurtosis": [round(float(k), 5) for k in kurtosis(layer.smoothed_weight())],
                 "cost": {str(a): channel_costs(layer, calib.layers[name], list(CANDIDATE_BITS), a,
                                               method).tolist() for a in (4, 8)},
                 "sensitivity": sensitivity(unet, name, calib, method, smoothing)}
        if layer.is_conv:
            entry.update(kernel=list(fp.kernel_size), stride=list(fp.stride), padding=list(fp.padding))
        layers[name] = entry
    return {"format": FORMAT, "version": VERSION, "model": {"sha256": sha, "class": "UNet2DModel"},
            "method": method, "smoothing": smoothing, "candidate_bits": list(CANDIDATE_BITS),
            "abits": [4, 8], "calibration": asdict(calib_cfg), "layers": layers}


def write_stats(stats: dict, path: str | Path) -> None:
    write_json(path, stats)


def read_stats(path: str | Path) -> dict:
    return read_versioned_json(path, FORMAT, VERSION, "re-run mpqdm stats")
