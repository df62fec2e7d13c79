"""The quantized export as ONNX with QuantizeLinear / DequantizeLinear (opset 21), and its check in
ONNX Runtime against the PyTorch fake-quant model.

Inputs: sample float32 [N, C, H, W]; timestep int64 [N] (or [1]); step int64 [], the index into the
export's per-step activation tables (0..n_steps-1, what load_for_sampling passes to set_step; the
model's metadata "mpqdm.timesteps" lists the calibrated timestep of each). Output: eps [N, C, H, W].

Each quantized layer L, input x (fake-quant: Q_a(x / smooth) conv Q_w(W * smooth) + b):
  xs = Div(x, L.smooth)                                        absent when every smooth is 1
  s = Gather(L.astep, step); z = Cast(Gather(L.azero, step))   uint4 for A4, uint8 for A8
  xd = DequantizeLinear(QuantizeLinear(xs, s, z), s, z)
  wd = DequantizeLinear(L.weight, L.wscale, L.wzero, axis)     int4 if the widest group <= 4 bits, else int8
  y  = Conv(xd, wd, L.bias)   or   Add(MatMul(xd, wd), L.bias) (linear: weight stored [c_in, c_out], axis 1)
Weights are in the original channel order (the export's are in plan order). A code c with zero z is
stored as c - z + zp with zp = z - 2^(B-1) (B = 4 or 8) when that fits the signed type. The zero points
are gathered as uint8 and cast, as the ONNX Gather takes no 4-bit type. An activation zero outside
0..2^a-1 (QAT can move it) has no uint4/uint8 form: that layer quantizes to int16 with zero 0 and
clips to [-z s, (2^a-1-z) s], which is the same function. Float layers stay as torch exports them.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mpqdm.core.errors import UserError
from mpqdm.core.io import check_output_file

from .quant.export import is_export, load_export
from .quant.swap import quant_layers, set_module, set_step
from .sampling import ddim_schedule, ddim_step, step_map

OPSET = 21
TRACE_OPSET = 20         # the highest the TorchScript exporter writes
DOMAIN = "mpqdm"            # the placeholder op torch exports in place of each quantized layer
# ORT may fuse DQ(weight) -> MatMul into MatMulNBits, whose default accuracy level 4 computes in int8
# and so quantizes the activations again; level 1 keeps fp32 and the graph's meaning.
ORT_CONFIG = {"session.qdq_matmulnbits_accuracy_level": "1"}


class _Holder:
    step: torch.Tensor | None = None


class _Placeholder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, step, name, layer):
        return layer(x)

    @staticmethod
    def symbolic(g, x, step, name, layer):
        y = g.op(f"{DOMAIN}::QuantLayer", x, step, name_s=name)
        sizes = x.type().varyingSizes()
        if sizes is not None:                  # rank and channels known, the rest left dynamic
            c = 1 if layer.is_conv else len(sizes) - 1
            y.setType(x.type().with_sizes([layer.fp.weight.shape[0] if i == c else None
                                           for i in range(len(sizes))]))
        return y


class _Stub(nn.Module):
    def __init__(self, name: str, layer: nn.Module, holder: _Holder):
        super().__init__()
        self.name, self.layer, self.holder = name, [layer], holder     # a list: not a submodule

    def forward(self, x):
        return _Placeholder.apply(x, self.holder.step, self.name, self.layer[0])


class _Eps(nn.Module):
    def __init__(self, unet: nn.Module, holder: _Holder):
        super().__init__()
        self.unet, self.holder = unet, holder

    def forward(self, sample, timestep, step):
        self.holder.step = step
        return self.unet(sample, timestep).sample


def _load(export_dir):
    if not is_export(export_dir):
        raise UserError(f"{str(export_dir)!r} is not a quantized export (no quant_export.json). "
                        "Possible solutions: give the folder mpqdm quantize or mpqdm qat wrote")
    return load_export(export_dir)


def _sample_shape(unet) -> list[int]:
    size = unet.config.sample_size
    return [unet.config.in_channels, *([size] * 2 if isinstance(size, int) else size)]


def signed_codes(codes: np.ndarray, zero: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(q, zp) in a signed `bits` type with q - zp == codes - zero per channel (axis 0); None if no fit."""
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    d = codes.reshape(len(zero), -1).astype(np.int64) - zero.reshape(-1, 1)
    zp_lo = np.maximum(lo, lo - d.min(1))
    zp_hi = np.minimum(hi, hi - d.max(1))
    if (zp_lo > zp_hi).any():
        return None
    zp = np.clip(zero - 2 ** (bits - 1), zp_lo, zp_hi)
    return (d + zp.reshape(-1, 1)).reshape(codes.shape), zp


def weight_type(plan_layer) -> int:
    """4 where the layer's widest group has at most 4 bits, else 8."""
    return 4 if max(g.wbits for g in plan_layer.groups) <= 4 else 8


class _Builder:
    def __init__(self, helper, tp, numpy_helper):
        self.h, self.tp, self.nh = helper, tp, numpy_helper
        self.nodes, self.inits = [], []

    def init(self, name: str, arr: np.ndarray, dtype: int | None = None) -> str:
        if dtype is None:
            self.inits.append(self.nh.from_array(arr, name))
        else:                                 # 4-bit: two a byte, the first in the low nibble
            v = (arr.flatten() & 0x0F).astype(np.uint8)
            v = np.append(v, np.uint8(0)) if v.size % 2 else v
            self.inits.append(self.h.make_tensor(name, dtype, arr.shape, (v[0::2] | (v[1::2] << 4)).tobytes(),
                                                 raw=True))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.h.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _layer_nodes(b: _Builder, name: str, layer, plan_layer, t: dict, x: str, step: str, y: str) -> int:
    """Append layer `name`'s QDQ nodes (input x, output y); returns its weight type's bits."""
    tp = b.tp
    conv = layer.is_conv
    order = np.asarray(plan_layer.order)
    n = lambda suffix: f"{name}.{suffix}"                         # noqa: E731
    smooth = t[n("smooth")].numpy()
    if not np.all(smooth == 1):
        x = b.node("Div", [x, b.init(n("smooth"), smooth.reshape(-1, 1, 1) if conv else smooth)], n("xs"))
    abits, astep, azero = layer.aq.bits, t[n("astep")].numpy(), t[n("azero")].numpy().astype(np.int64)
    qmax = 2 ** abits - 1
    s = b.node("Gather", [b.init(n("astep"), astep), step], n("s"))
    if azero.min() >= 0 and azero.max() <= qmax:
        z = b.node("Gather", [b.init(n("azero"), azero.astype(np.uint8)), step], n("z8"))
        if abits == 4:
            z = b.node("Cast", [z], n("z"), to=tp.UINT4)
        q = b.node("QuantizeLinear", [x, s, z], n("xq"))
        xd = b.node("DequantizeLinear", [q, s, z], n("xd"))
    else:
        z0 = b.init(n("z0"), np.array(0, np.int16))
        q = b.node("QuantizeLinear", [x, s, z0], n("xq"))
        d = b.node("DequantizeLinear", [q, s, z0], n("xd16"))
        lo = b.node("Gather", [b.init(n("alo"), (-azero * astep).astype(np.float32)), step], n("lo"))
        hi = b.node("Gather", [b.init(n("ahi"), ((qmax - azero) * astep).astype(np.float32)), step], n("hi"))
        xd = b.node("Clip", [d, lo, hi], n("xd"))
    codes, wstep = np.empty_like(t[n("wcodes")].numpy()), np.empty(len(order), np.float32)
    zero = np.empty(len(order), np.int64)
    codes[order], wstep[order], zero[order] = t[n("wcodes")].numpy(), t[n("wstep")].numpy(), t[n("wzero")].numpy()
    bits = weight_type(plan_layer)
    fit = signed_codes(codes, zero, bits) if bits == 4 else None
    if fit is None:
        bits, fit = 8, signed_codes(codes, zero, 8)
    if fit is None:
        raise UserError(f"layer {name!r}: weight zero points {zero.min()}..{zero.max()} leave codes outside "
                        "int8. Possible solutions: re-export it with mpqdm quantize")
    wq, wz = fit
    dtype = tp.INT4 if bits == 4 else None
    wq = wq.astype(np.int8) if conv else wq.astype(np.int8).T
    wd = b.node("DequantizeLinear", [b.init(n("weight"), wq, dtype), b.init(n("wscale"), wstep),
                                     b.init(n("wzero"), wz.astype(np.int8), dtype)], n("wd"), axis=0 if conv else 1)
    inputs = [xd, wd]
    bias = t.get(n("bias"))
    if bias is not None:
        full = np.empty(len(order), np.float32)
        full[order] = bias.numpy()
        inputs.append(b.init(n("bias"), full))
    if conv:
        fp = layer.fp
        if fp.padding_mode != "zeros" or isinstance(fp.padding, str):
            raise UserError(f"layer {name!r}: padding {fp.padding!r} ({fp.padding_mode}) has no ONNX export here")
        ph, pw = fp.padding
        b.node("Conv", inputs, y, kernel_shape=list(fp.kernel_size), strides=list(fp.stride),
               pads=[ph, pw, ph, pw], dilations=list(fp.dilation), group=1)
    elif len(inputs) == 3:
        b.node("Add", [b.node("MatMul", inputs[:2], n("mm")), inputs[2]], y)
    else:
        b.node("MatMul", inputs, y)
    return bits


def _save(model, path: Path) -> None:
    import onnx

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _trace(unet, meta, holder):
    """The traced model (opset 20, torch's highest) with a placeholder node per quantized layer."""
    import onnx

    args = (torch.zeros(2, *_sample_shape(unet)), torch.full((2,), int(meta["timesteps"][0])), torch.tensor(0))
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)       # shape asserts, seen as constants
        torch.onnx.export(_Eps(unet, holder), args, buf, input_names=["sample", "timestep", "step"],
                          output_names=["eps"], opset_version=TRACE_OPSET, dynamo=False,
                          custom_opsets={DOMAIN: 1},
                          dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "timesteps"}, "eps": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def export_onnx(export_dir: str | Path, out_path: str | Path) -> dict:
    """Write the export `export_dir` as an ONNX QDQ model at `out_path` (atomically); returns a summary.
    The ops torch writes at opset 20 (Cast, Constant, Identity, Reshape, Shape, Transpose, Unsqueeze,
    ...) mean the same at 21, which only gave some of them more types."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = check_output_file(out_path, "export-onnx")
    unet, plan, meta, tensors, _ = _load(export_dir)
    unet.eval().requires_grad_(False)
    layers = quant_layers(unet)
    holder = _Holder()
    for name, layer in layers.items():
        set_module(unet, name, _Stub(name, layer, holder))
    model = _trace(unet, meta, holder)
    b = _Builder(helper, TensorProto, numpy_helper)
    counts = {"int4": 0, "int8": 0}
    for node in model.graph.node:
        if node.domain != DOMAIN:
            b.nodes.append(node)
            continue
        name = next(a.s.decode() for a in node.attribute if a.name == "name")
        bits = _layer_nodes(b, name, layers[name], plan.layers[name], tensors, node.input[0], node.input[1],
                            node.output[0])
        counts[f"int{bits}"] += 1
    used = {i for nd in b.nodes for i in nd.input}
    inits = [i for i in model.graph.initializer if i.name in used] + b.inits
    graph = helper.make_graph(b.nodes, "mpqdm", model.graph.input, model.graph.output, inits)
    new = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mpqdm",
                            ir_version=model.ir_version)
    helper.set_model_props(new, {"mpqdm.timesteps": json.dumps(meta["timesteps"]),
                                 "mpqdm.n_steps": str(meta["n_steps"])})
    onnx.checker.check_model(new)
    _save(new, out)
    return {"onnx": str(out), "opset": OPSET, "layers": len(layers), "int4_layers": counts["int4"],
            "int8_layers": counts["int8"], "float_layers": len(meta.get("float_layers", [])),
            "n_steps": meta["n_steps"], "bytes": out.stat().st_size,
            "inputs": {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                       for i in graph.input}}


def session(onnx_path: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with ORT_CONFIG (fp32 MatMulNBits); a path or the model's bytes."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    for k, v in ORT_CONFIG.items():
        so.add_session_config_entry(k, v)
    if threads:
        so.intra_op_num_threads = threads
    model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _with_layer_inputs(onnx_path) -> tuple[bytes, list[str]]:
    """The model with every quantized layer's dequantized input (`L.xd`) as an extra output."""
    import onnx

    model = onnx.load(str(onnx_path))
    names = [n.output[0] for n in model.graph.node if n.output[0].endswith(".xd")]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    return model.SerializeToString(), names


def _first_flip(names, got, seen, layers, i) -> dict | None:
    """The first layer (graph order) whose dequantized input differs: how many codes, and how far
    x / s is from a rounding tie at the farthest of them (0: a tie, so float rounding decided it)."""
    for name, ort_xd in zip(names, got, strict=True):
        xs, ref = seen[name]
        diff = ort_xd != ref.numpy()
        if diff.any():
            r = xs.numpy()[diff] / float(layers[name[:-3]].aq.step[i])
            return {"layer": name[:-3], "codes": int(diff.sum()),
                    "tie_distance": float(np.abs(np.abs(r - np.floor(r)) - 0.5).max())}
    return None


@torch.no_grad()
def check_onnx(export_dir: str | Path, onnx_path: str | Path, steps: int | None = None, batch: int = 4,
               seed: int = 0, sess=None, diagnose: bool = False) -> dict:
    """ONNX Runtime against the fake-quant model at every sampling step of a DDIM run of `steps`
    (None: the export's calibrated steps), step i feeding step_map's index as load_for_sampling does.
    x_t: the fake-quant model's own trajectory from fixed-seed noise. The relative error of one UNet
    call: ||eps_ort - eps_torch|| / ||eps_torch|| over the batch. diagnose: per step, the first layer
    whose input codes differ (_first_flip; sess is then ignored)."""
    if not Path(onnx_path).is_file():
        raise UserError(f"{str(onnx_path)!r} is not a file. Possible solutions: run mpqdm export-onnx first")
    unet, _, meta, _, sched = _load(export_dir)
    unet.eval()
    layers, seen, names = quant_layers(unet), {}, []
    if diagnose:
        model, names = _with_layer_inputs(onnx_path)
        sess = session(model)
        for name, layer in layers.items():
            layer.aq.register_forward_hook(lambda m, a, y, n=name: seen.__setitem__(f"{n}.xd", (a[0], y)))
    sess = sess or session(onnx_path)
    steps = steps or meta["n_steps"]
    ddim = ddim_schedule(sched.alphas_cumprod, steps, sched.config.num_train_timesteps)
    index = step_map(meta["timesteps"], ddim.timesteps)
    x = torch.randn(batch, *_sample_shape(unet), generator=torch.Generator().manual_seed(seed))
    errs, flips = [], []
    for i, t in enumerate(ddim.timesteps):
        tt = torch.full((batch,), int(t))
        set_step(unet, index[i])
        ref = unet(x, tt).sample
        got = sess.run(None, {"sample": x.numpy(), "timestep": tt.numpy(), "step": np.array(index[i], np.int64)})
        errs.append(float(np.linalg.norm(got[0] - ref.numpy()) / np.linalg.norm(ref.numpy())))
        if diagnose:
            flips.append(_first_flip(names, got[1:], seen, layers, index[i]))
        x = ddim_step(x, ref, ddim, i)
    return {"steps": steps, "batch": batch, "seed": seed, "per_step": errs,
            "median_rel_error": float(np.median(errs)), "max_rel_error": float(max(errs)),
            **({"first_flips": flips} if diagnose else {})}
