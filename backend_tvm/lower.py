"""Lowering of a quantized UNet2DModel export to the static plan (backend_tvm.plan).

The walk follows diffusers' UNet2DModel forward block by block (NHWC float32 activations):
time embedding, conv_in, down blocks (resnets, attentions, downsamplers), the mid block, up blocks
(skip concatenation, resnets, attentions, upsamplers), norm/SiLU/conv_out. A quantized layer becomes
two calls: `quantize` (the SmoothQuant division and the input codes of the sampling step) and the
packed mixed-precision `qconv` of the board; a float layer one fp32 conv or dense. GroupNorm + SiLU
is one call; where its output feeds one quantized conv only (a resnet's conv1 and conv2, conv_out)
that conv's quantizer runs inside it and the quantize call goes. The time-embedding projection of a
resnet is added to conv1's bias (a [C] add), so the broadcast add costs no pass over the feature map.
Anything else is refused by name.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mpqdm.core.packing import weight_rows
from mpqdm.core.scheme import ConvSpec, QConvArgs, conv_out, weight_constants
from mpqdm.core.support import DOWN_BLOCKS, UP_BLOCKS, check_conv, check_unet_config, unsupported
from mpqdm.frontend.quant.export import load_export
from mpqdm.frontend.quant.layers import QuantLayer
from mpqdm.frontend.sampling import ddim_schedule, step_map

from .kernels import fp
from .kernels.attention import AttentionSpec, schedule_attention
from .kernels.qconv_schedule import schedule_qconv, with_paths
from .kernels.quantize import schedule_quantize
from .plan import ACT, CONST, INPUT, OUTPUT, TIMESTEP, Arg, Plan, Tensor, plan_memory

CONST_NAMES = {"wp": "packed", "sw": "wstep", "zw": "wzero"}    # artifact tensor names of the weight arguments
class Lowering:
    def __init__(self, qunet: nn.Module, bitplan, tensors: dict, meta: dict, board, steps: int, scheduler,
                 choose=None):
        self.unet, self.bitplan, self.t, self.meta, self.board = qunet, bitplan, tensors, meta, board
        self.choose = choose        # (shape key, wbits, abits) -> kernel path or None (the rule's)
        self.plan = Plan(n_steps=steps)
        sched = ddim_schedule(scheduler.alphas_cumprod, steps, scheduler.config.num_train_timesteps)
        self.schedule, self.scheduler = sched, scheduler
        self.step_of = step_map(meta["timesteps"], sched.timesteps)   # deployed step -> trained step
        self.specs: dict[tuple, str] = {}
        self.n = 0

    # -- tensors and kernels ---------------------------------------------------------------------------
    def act(self, shape, dtype="float32", kind=ACT) -> str:
        self.n += 1
        name = f"t{self.n}"
        self.plan.add(Tensor(name, dtype, tuple(shape), kind))
        return name

    def view(self, base: str, shape) -> str:
        self.n += 1
        name = f"t{self.n}"
        b = self.plan.tensors[base]
        self.plan.add(Tensor(name, b.dtype, tuple(shape), b.kind, alias_of=base))
        return name

    def const(self, name: str, data: np.ndarray, dtype: str, bits: int = 0) -> str:
        self.plan.add(Tensor(name, dtype, np.shape(data), CONST, data=np.asarray(data), bits=bits))
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.plan.tensors[name].shape

    def kernel(self, kind: str, spec, build) -> str:
        key = (kind, spec)
        if key not in self.specs:
            sym = f"mpq_{kind}_{len(self.specs)}"
            self.plan.kernels[sym] = build(sym)
            self.plan.kernel_specs[sym] = repr(spec)
            self.specs[key] = sym
        return self.specs[key]

    def call(self, kind, spec, build, args, op) -> None:
        self.plan.call(self.kernel(kind, spec, build), args, op)

    # -- elementwise ops -------------------------------------------------------------------------------
    def group_norm(self, gn: nn.GroupNorm, x: str, silu: bool, op: str, quantizer: tuple = ()) -> str:
        """GroupNorm (+ SiLU) of x; with `quantizer` (the consuming layer's smooth, act, az, qmax and
        codes tensors) it writes that layer's input codes instead of the float map."""
        n, h, w, c = self.shape(x)
        if not gn.affine:
            raise unsupported(f"{op}: GroupNorm without affine parameters")
        spec = fp.GroupNormSpec(n, h, w, c, gn.num_groups, float(gn.eps), silu, quantize=bool(quantizer),
                                parts=self.board.threads)
        g = self.const(f"{op}.weight", gn.weight.detach().numpy(), "float32")
        b = self.const(f"{op}.bias", gn.bias.detach().numpy(), "float32")
        y = quantizer[-1] if quantizer else self.act((n, h, w, c))
        self.call("group_norm", spec, lambda s: fp.schedule_group_norm(spec, s), (x, g, b, *quantizer[:-1], y), op)
        return y

    def eltwise(self, kind: str, xs: list[str], op: str) -> str:
        """Pointwise over NHWC-shaped operands; other ranks run on [1, .., C] views of them."""
        shape = self.shape(xs[0])
        spec = fp.EltwiseSpec(*((1,) * (4 - len(shape)) + shape))
        if len(shape) != 4:
            xs = [self.view(v, spec.shape) for v in xs]
        build = {"add": fp.schedule_add, "silu": fp.schedule_silu}[kind]
        y = self.act(spec.shape)
        self.call(kind, spec, lambda s: build(spec, s), (*xs, y), op)
        return y if len(shape) == 4 else self.view(y, shape)

    def concat(self, a: str, b: str, op: str) -> str:
        n, h, w, c1 = self.shape(a)
        spec = fp.ConcatSpec(n, h, w, c1, self.shape(b)[3])
        y = self.act((n, h, w, c1 + spec.c2))
        self.call("concat", spec, lambda s: fp.schedule_concat(spec, s), (a, b, y), op)
        return y

    def upsample(self, x: str, op: str) -> str:
        n, h, w, c = self.shape(x)
        spec = fp.EltwiseSpec(n, h, w, c)
        y = self.act((n, 2 * h, 2 * w, c))
        self.call("upsample", spec, lambda s: fp.schedule_upsample_nearest2x(spec, s), (x, y), op)
        return y

    # -- layers ----------------------------------------------------------------------------------------
    def layer(self, name: str, x: str, bias: str | None = None, norm: tuple | None = None) -> str:
        """A Conv2d (x NHWC) or Linear (x [..., c_in]) of the model; `bias` replaces the layer's bias
        by a tensor computed at run time (conv1 + time embedding). `norm` (GroupNorm, silu, op): the
        layer's input is that GroupNorm of x, used by nothing else, so a quantized layer's input
        quantizer runs inside the GroupNorm call (codes out, no float map, no quantize call)."""
        mod = self.unet.get_submodule(name)
        quant = isinstance(mod, QuantLayer)
        fpm = mod.fp if quant else mod
        if norm is not None and not (quant and isinstance(fpm, nn.Conv2d)):
            x, norm = self.group_norm(norm[0], x, norm[1], norm[2]), None
        shape = self.shape(x)
        if isinstance(fpm, nn.Conv2d):
            n, h, w, c_in = shape
            k, s, p = fpm.kernel_size[0], fpm.stride[0], fpm.padding[0]
            check_conv(name, fpm)               # the conv geometry the kernels implement
            geo = (n, h, w, c_in, fpm.out_channels, k, k, s, p)
            out_shape = (n, conv_out(h, k, s, p), conv_out(w, k, s, p), fpm.out_channels)
            xin = x
        elif isinstance(fpm, nn.Linear):
            rows = int(np.prod(shape[:-1]))
            geo = (rows, 1, 1, shape[-1], fpm.out_features, 1, 1, 1, 0)
            out_shape = (*shape[:-1], fpm.out_features)
            xin = self.view(x, (rows, 1, 1, shape[-1]))
        else:
            raise unsupported(f"layer {name!r} of type {type(fpm).__name__}")
        if bias is None:
            b = fpm.bias.detach().numpy() if fpm.bias is not None else np.zeros(geo[4], np.float32)
            bias = self.const(f"{name}.bias", b, "float32")
        y4 = self.act((geo[0], *out_shape[1:]) if len(out_shape) == 4 else (geo[0], 1, 1, geo[4]))
        if quant:
            self.quantized(name, xin, bias, y4, geo, norm)
        else:
            self.floating(name, fpm, xin, bias, y4, geo)
        return y4 if len(out_shape) == 4 else self.view(y4, out_shape)

    def floating(self, name, fpm, x, bias, y, geo) -> None:
        n, h, w, c_in, c_out, k, _, s, p = geo
        wt = fpm.weight.detach().numpy()
        if isinstance(fpm, nn.Conv2d):
            spec = fp.Conv2dSpec(n, h, w, c_in, c_out, k, k, s, p)
            wc = self.const(f"{name}.weight", fp.conv2d_weight(spec, wt), "float32")
            wide, lane = fp.wide_registers(self.board), fp.lane_fma(self.board)
            self.call("conv2d", spec, lambda sym: fp.schedule_conv2d(spec, sym, wide, lane), (x, wc, bias, y), name)
        else:
            spec = fp.DenseSpec(n, c_in, c_out)
            wc = self.const(f"{name}.weight", wt, "float32")
            xv, yv = self.view(x, (n, c_in)), self.view(y, (n, c_out))
            self.call("dense", spec, lambda sym: fp.schedule_dense(spec, sym), (xv, wc, bias, yv), name)

    def quantized(self, name, x, bias, y, geo, norm=None) -> None:
        n, h, w, c_in, c_out, k, _, s, p = geo
        lp, meta, t = self.bitplan.layers[name], self.meta["layers"][name], self.t
        groups = tuple((g.stop - g.start, g.wbits) for g in lp.groups)
        abits = int(meta["abits"])
        idx = self.step_of
        act = Arg(self.const(f"{name}.astep", t[f"{name}.astep"].numpy()[idx], "float32"), True)
        az = Arg(self.const(f"{name}.azero", t[f"{name}.azero"].numpy()[idx], "int32"), True)
        smooth = self.const(f"{name}.smooth", t[f"{name}.smooth"].numpy(), "float32")
        codes = self.act((n, h, w, c_in), "uint8")
        if norm is not None:
            qmax = self.const(f"{name}.qmax", np.array([2 ** abits - 1], np.float32), "float32")
            self.group_norm(norm[0], x, norm[1], norm[2], (smooth, act, az, qmax, codes))
        else:
            qspec = ((n, h, w, c_in), abits)
            self.call("quantize", qspec, lambda sym: schedule_quantize(*qspec, sym), (x, smooth, act, az, codes),
                      name)
        spec = with_paths(ConvSpec(n, h, w, c_in, c_out, k, k, s, p, groups, abits), self.board, self.choose)
        rows = weight_rows(t[f"{name}.wcodes"].numpy())                  # plan order
        wc = weight_constants(spec, rows, lp.order, t[f"{name}.wstep"].numpy(), t[f"{name}.wzero"].numpy())
        dtypes = spec.arg_types()
        packed_bits = groups[0][1] if len(groups) == 1 else 0        # one width: the artifact records it
        consts = {f: self.const(f"{name}.{CONST_NAMES.get(f, f)}", wc[f], getattr(dtypes, f)[1],
                                bits=packed_bits if f == "wp" else 0) for f in wc}
        args = QConvArgs(x=codes, **consts, bias=bias, act=act, az=az, y=y)
        self.call("qconv", spec, lambda sym: schedule_qconv(spec, self.board, name=sym), args.ordered(), name)

    # -- blocks ----------------------------------------------------------------------------------------
    def resnet(self, name: str, r, x: str, temb_silu: str) -> str:
        for attr, ok in (("upsample", not r.up), ("downsample", not r.down),
                         ("time_embedding_norm", r.time_embedding_norm == "default"),
                         ("output_scale_factor", r.output_scale_factor == 1.0),
                         ("nonlinearity", isinstance(r.nonlinearity, nn.SiLU)),
                         ("skip_time_act", not getattr(r, "skip_time_act", False))):
            if not ok:
                raise unsupported(f"{name}: ResnetBlock2D with {attr}={getattr(r, attr, None)!r}")
        bias = None
        if r.time_emb_proj is not None:
            proj = self.layer(f"{name}.time_emb_proj", temb_silu)                  # [1, C]
            c1 = r.conv1.fp if isinstance(r.conv1, QuantLayer) else r.conv1
            b = c1.bias.detach().numpy() if c1.bias is not None else np.zeros(c1.out_channels, np.float32)
            b1 = self.const(f"{name}.conv1.bias", b.reshape(1, 1, 1, -1), "float32")
            proj = self.view(proj, (1, 1, 1, b.size))
            bias = self.view(self.eltwise("add", [b1, proj], f"{name}.temb_add"), (b.size,))
        h = self.layer(f"{name}.conv1", x, bias, norm=(r.norm1, True, f"{name}.norm1"))
        h = self.layer(f"{name}.conv2", h, norm=(r.norm2, True, f"{name}.norm2"))
        if r.conv_shortcut is not None:
            x = self.layer(f"{name}.conv_shortcut", x)
        return self.eltwise("add", [x, h], f"{name}.residual")

    def attention(self, name: str, a, x: str) -> str:
        if a.group_norm is None or a.spatial_norm is not None or a.norm_cross or not a.residual_connection \
                or a.rescale_output_factor != 1.0 or a.is_cross_attention or getattr(a, "norm_q", None) is not None:
            raise unsupported(f"{name}: this Attention configuration")
        n, h, w, c = self.shape(x)
        hn = self.group_norm(a.group_norm, x, False, f"{name}.group_norm")
        tokens = self.view(hn, (n, h * w, c))
        q, k, v = (self.layer(f"{name}.{p}", tokens) for p in ("to_q", "to_k", "to_v"))
        spec = AttentionSpec(n, h * w, c, a.heads)
        if abs(a.scale - spec.d ** -0.5) > 1e-12 * a.scale:
            raise unsupported(f"{name}: attention scale {a.scale} (the kernel uses 1/sqrt(head dim))")
        o = self.act((n, h * w, c))
        lane, wide = fp.lane_fma(self.board), fp.wide_registers(self.board)
        self.call("attention", spec, lambda s: schedule_attention(spec, s, lane, wide), (q, k, v, o), name)
        out = self.layer(f"{name}.to_out.0", o)
        return self.eltwise("add", [x, self.view(out, (n, h, w, c))], f"{name}.residual")

    def sampler(self, name: str, mod, x: str) -> str:
        kind = type(mod).__name__
        if getattr(mod, "norm", None) is not None:
            raise unsupported(f"{name}: {kind} with a norm")
        if kind == "Downsample2D" and mod.use_conv:
            if mod.padding == 0:                   # diffusers pads one zero row and column first
                n, h, w, c = self.shape(x)
                spec = fp.EltwiseSpec(n, h, w, c)
                y = self.act((n, h + 1, w + 1, c))
                self.call("pad", spec, lambda s: fp.schedule_pad_bottom_right(spec, s), (x, y), f"{name}.pad")
                x = y
            return self.layer(f"{name}.conv", x)
        if kind == "Upsample2D" and mod.use_conv and not mod.use_conv_transpose and mod.interpolate:
            return self.layer(f"{name}.conv", self.upsample(x, f"{name}.upsample"))
        raise unsupported(f"{name}: {kind} with this configuration")

    # -- the model -------------------------------------------------------------------------------------
    def lower(self) -> Plan:
        u, cfg = self.unet, self.unet.config
        check_unet_config(cfg)                  # the check the first stages ran before calibrating
        for attr, ok in (("time_embedding_type", cfg.time_embedding_type == "positional"),
                         ("class_embed_type", u.class_embedding is None), ("act_fn", cfg.act_fn == "silu"),
                         ("center_input_sample", not cfg.center_input_sample),
                         ("time_proj.scale", getattr(u.time_proj, "scale", 1) == 1)):
            if not ok:
                raise unsupported(f"UNet2DModel with {attr}={getattr(cfg, attr, None)!r}")
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        x = self.act((1, size, size, cfg.in_channels), kind=INPUT)
        t = self.act((1,), kind=TIMESTEP)
        tp = u.time_proj
        spec = fp.TimestepSpec(1, tp.num_channels, bool(tp.flip_sin_to_cos), float(tp.downscale_freq_shift))
        temb = self.act((1, tp.num_channels))
        self.call("timestep", spec, lambda s: fp.schedule_timestep_embedding(spec, s), (t, temb), "time_proj")
        temb = self.layer("time_embedding.linear_1", temb)
        temb = self.eltwise("silu", [temb], "time_embedding.act")
        temb = self.layer("time_embedding.linear_2", temb)
        temb_silu = self.eltwise("silu", [temb], "resnets.temb_act")     # every resnet's SiLU(temb)
        h = self.layer("conv_in", x)
        skips = [h]
        for i, blk in enumerate(u.down_blocks):
            h = self.block(f"down_blocks.{i}", blk, h, temb_silu, skips, up=False)
        h = self.mid(u.mid_block, h, temb_silu)
        for i, blk in enumerate(u.up_blocks):
            h = self.block(f"up_blocks.{i}", blk, h, temb_silu, skips, up=True)
        if u.conv_norm_out is None:
            raise unsupported("UNet2DModel without conv_norm_out")
        h = self.layer("conv_out", h, norm=(u.conv_norm_out, True, "conv_norm_out"))
        self.plan.tensors[h].kind = OUTPUT          # conv_out writes the noise prediction directly
        return self.plan

    def block(self, name: str, blk, h: str, temb: str, skips: list[str], up: bool) -> str:
        kind = type(blk).__name__
        if kind not in DOWN_BLOCKS + UP_BLOCKS:
            raise unsupported(f"{name}: block type {kind}")
        attns = getattr(blk, "attentions", None) or [None] * len(blk.resnets)
        for j, (r, a) in enumerate(zip(blk.resnets, attns, strict=True)):
            if up:
                h = self.concat(h, skips.pop(), f"{name}.resnets.{j}.concat")
            h = self.resnet(f"{name}.resnets.{j}", r, h, temb)
            if a is not None:
                h = self.attention(f"{name}.attentions.{j}", a, h)
            if not up:
                skips.append(h)
        for j, s in enumerate(getattr(blk, "downsamplers", None) or []):
            h = self.sampler(f"{name}.downsamplers.{j}", s, h)
            skips.append(h)
        for j, s in enumerate(getattr(blk, "upsamplers", None) or []):
            h = self.sampler(f"{name}.upsamplers.{j}", s, h)
        return h

    def mid(self, blk, h: str, temb: str) -> str:
        if type(blk).__name__ != "UNetMidBlock2D":
            raise unsupported(f"mid_block of type {type(blk).__name__}")
        h = self.resnet("mid_block.resnets.0", blk.resnets[0], h, temb)
        for j, (a, r) in enumerate(zip(blk.attentions, blk.resnets[1:], strict=True)):
            if a is not None:
                h = self.attention(f"mid_block.attentions.{j}", a, h)
            h = self.resnet(f"mid_block.resnets.{j + 1}", r, h, temb)
        return h


def lower_export(export_dir, board, steps: int | None = None, choose=None) -> tuple[Plan, Lowering]:
    """Export folder + board -> the plan (memory planned), and the lowering (schedule, tensors);
    `choose` (shape key, wbits, abits) -> kernel path: the measured paths of the quantized layers."""
    qunet, bitplan, meta, tensors, scheduler = load_export(export_dir)
    steps = steps or int(meta["n_steps"])
    with torch.no_grad():
        low = Lowering(qunet.eval(), bitplan, tensors, meta, board, steps, scheduler, choose)
        plan = low.lower()
    plan_memory(plan)
    return plan, low
