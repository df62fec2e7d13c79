"""runtime/tests/data: the synthetic artifacts that runtime/tests/test_loader.c opens, and their
manifest cases.txt ("<file> [OPTION...] ok" or "<file> [OPTION...] error <substring of the loader's
message>"; the options, board=NAME and max_arena=BYTES, are the loader's mpq_open_options).

Valid artifacts come from the fuzz corpus's synthetic plan (mpqdm/testing/fuzz.py); each broken one is
valid_2steps.mpq with one field patched (offsets from backend_tvm.artifact.LAYOUT) and its checksum
recomputed, so that it reaches the check of that field, or cut; the checksum cases patch without
recomputing it. Remake
the committed files after a change of the artifact format, writer or loader messages:
    .venv/bin/python -m mpqdm.testing.loader_data runtime/tests/data
tests/test_runtime_loader.py checks that the committed files are what this module writes.
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

from mpqdm.backend_tvm.artifact import (
    ARG,
    CALL,
    FORMAT_VERSION,
    HEADER,
    KERNEL,
    LAYOUT,
    SAMPLER,
    TENSOR,
    checksum,
    with_checksum,
    write_artifact,
)

from .fuzz import SYNTHETIC_META, synthetic_plan, synthetic_sampler, write_synthetic

MANIFEST_HEAD = ("# runtime/tests/test_loader.c: one artifact per line, '<file> [OPTION...] ok' or '<file> [OPTION...] "
                 "error\n# <substring of the loader's message>'; OPTION: board=NAME (the binary's board), "
                 "max_arena=BYTES (the\n# arena limit); without options the loader gets NULL options. Broken "
                 "files are valid_2steps.mpq with\n# one field patched and the checksum recomputed (except in "
                 "the checksum cases), or the file cut.\n"
                 "# Remake: python -m mpqdm.testing.loader_data runtime/tests/data\n")

# tensors of the synthetic plan, by index (fuzz.synthetic_plan's order)
W, W_FLAT, BIAS, STEP_SCALE, STEP_ZERO, X, T, H, H_TOKENS, Y, EPS = range(11)
CODES = {s.name: dict(s.fields) for s in (HEADER, TENSOR, KERNEL, CALL, ARG, SAMPLER)}
SECTION = {"mpq_art_tensor": ("tensors_offset", TENSOR.size), "mpq_art_kernel": ("kernels_offset", KERNEL.size),
           "mpq_art_call": ("calls_offset", CALL.size), "mpq_art_arg": ("args_offset", ARG.size),
           "mpq_art_sampler": ("sampler_offset", 0)}


def header(buf: bytes) -> dict:
    return HEADER.unpack(buf)


def patch(buf: bytes, struct_name: str, index: int, field: str, value, elem: int = 0, stamp: bool = True) -> bytes:
    """buf with field (element `elem` of an array field) of entry `index` of a table set to value, and its
    checksum recomputed (unless not stamp)."""
    if struct_name == "mpq_art_header":
        base = 0
    else:
        off_field, size = SECTION[struct_name]
        base = header(buf)[off_field] + index * size
    code = CODES[struct_name][field]
    if code.endswith("s"):
        raw = bytes(value)
    else:
        scalar = code[-1]
        at_elem = struct.calcsize("<" + scalar) * elem
        raw = struct.pack("<" + scalar, value)
        base += at_elem
    at = base + LAYOUT[struct_name]["fields"][field]
    out = buf[:at] + raw + buf[at + len(raw):]
    return with_checksum(out) if stamp else out


def head(buf: bytes, field: str, value, stamp: bool = True) -> bytes:
    return patch(buf, "mpq_art_header", 0, field, value, stamp=stamp)


def sampler_array(buf: bytes, which: str, i: int, value) -> bytes:
    h = header(buf)
    at = h["sampler_offset"] + SAMPLER.size + (0 if which == "timesteps" else 4 * h["n_steps"]) + 4 * i
    raw = struct.pack("<i" if which == "timesteps" else "<f", value)
    return with_checksum(buf[:at] + raw + buf[at + 4:])


def replace_string(buf: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    h = header(buf)
    table = buf[h["strings_offset"]:h["strings_offset"] + h["strings_bytes"]]
    at = table.index(old + b"\0")
    assert at == 0 or table[at - 1] == 0, "not a whole string"
    start = h["strings_offset"] + at
    return with_checksum(buf[:start] + new + buf[start + len(new):])


def mismatch(blob: bytes) -> str:
    """The loader's message for a file whose stored checksum is not its own."""
    return (f"checksum mismatch: the file is corrupted (stored 0x{header(blob)['checksum']:08x}, computed "
            f"0x{checksum(blob):08x}); recompile it with mpqdm compile")


def cases() -> list[tuple[str, bytes, str | None, str]]:
    """(file name, bytes, None for a valid artifact or the substring of the loader's error, the options
    test_loader opens it with: "" or words "board=NAME", "max_arena=BYTES")."""
    out: list[tuple[str, bytes, str | None, str]] = []

    def ok(name: str, blob: bytes, options: str = "") -> None:
        out.append((name, blob, None, options))

    def bad(name: str, blob: bytes, msg: str, options: str = "") -> None:
        out.append((name, blob, msg, options))

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "a.mpq"
        valid = {n: write_synthetic(tmp, n_steps=n, seed=n).read_bytes() for n in (1, 2, 3)}
        sampler = {**synthetic_sampler(4), "clip_sample": False}
        write_artifact(tmp, synthetic_plan(4, seed=4), **SYNTHETIC_META, sampler=sampler)
        noclip = tmp.read_bytes()

    buf = valid[2]
    h = header(buf)
    size = len(buf)
    hs = HEADER.size
    ok("valid_1step.mpq", valid[1], "board=host")
    ok("valid_2steps.mpq", buf)
    ok("valid_3steps.mpq", valid[3])
    ok("valid_4steps_noclip.mpq", noclip)
    ok("valid_arena_1mib.mpq", head(buf, "arena_bytes", 1 << 20), "max_arena=1048576")      # at the limit

    # the file as a whole
    bad("empty.mpq", b"", f"truncated (0 bytes, the header alone is {hs})")
    bad("truncated_header.mpq", buf[:hs // 2], f"truncated ({hs // 2} bytes, the header alone is {hs})")
    bad("truncated_header_by_one.mpq", buf[:hs - 1], f"truncated ({hs - 1} bytes, the header alone is {hs})")
    bad("truncated_half.mpq", buf[:size // 2],
        f"file is {size // 2} bytes, its header says {size} (truncated or appended)")
    bad("truncated_by_one.mpq", buf[:-1], f"file is {size - 1} bytes, its header says {size}")
    bad("appended.mpq", buf + b"\0" * 64, f"file is {size + 64} bytes, its header says {size}")
    # the header
    bad("wrong_magic.mpq", head(buf, "magic", b"MPQDMARX"), "not an mpqdm artifact (wrong magic)")
    v = FORMAT_VERSION
    bad("version_0.mpq", head(buf, "version", 0), f"artifact version 0; this runtime reads version {v}")
    bad("version_1.mpq", head(buf, "version", 1),
        f"artifact version 1; this runtime reads version {v}: recompile it with mpqdm compile")
    bad("version_3.mpq", head(buf, "version", 3), f"artifact version 3; this runtime reads version {v}: recompile")
    bad("header_size.mpq", head(buf, "header_size", 352), f"header size 352, expected {hs}: recompile")
    # the checksum: corruptions that do not recompute it
    flipped = bytearray(buf)
    flipped[h["data_offset"] + 5] ^= 0x40
    bad("checksum_data_byte.mpq", bytes(flipped), mismatch(bytes(flipped)))
    calls = head(buf, "n_calls", h["n_calls"] ^ 1, stamp=False)
    bad("checksum_call_count.mpq", calls, mismatch(calls))
    stored = head(buf, "checksum", h["checksum"] ^ 0x80000000, stamp=False)
    bad("checksum_field.mpq", stored, mismatch(stored))
    strings = bytearray(buf)
    strings[h["strings_offset"]] ^= 0x01
    bad("checksum_string_byte.mpq", bytes(strings), mismatch(bytes(strings)))
    # reserved fields, the board
    bad("flags_nonzero.mpq", head(buf, "flags", 1), "reserved header field flags is 0x00000001, expected 0")
    bad("reserved_nonzero.mpq", head(buf, "reserved", 0x80000000),
        "reserved header field reserved is 0x80000000, expected 0")
    bad("board_empty.mpq", head(buf, "board", b"\0" * 32), "bad board name '' (empty)")
    bad("board_bad_char.mpq", head(buf, "board", b"rpi 5".ljust(32, b"\0")),
        "bad board name 'rpi 5' (a character outside [A-Za-z0-9._-])")
    bad("board_newline.mpq", head(buf, "board", b"rpi\n5".ljust(32, b"\0")),
        "bad board name 'rpi?5' (a character outside [A-Za-z0-9._-])")
    bad("board_not_padded.mpq", head(buf, "board", b"host\0x".ljust(32, b"\0")),
        "bad board name 'host' (not NUL-padded)")
    bad("board_other.mpq", head(buf, "board", b"rpi5".ljust(32, b"\0")),
        "compiled for board 'rpi5', but this binary was built for board 'host': rebuild", "board=host")
    bad("tensors_past_end.mpq", head(buf, "tensors_offset", size + 8), "a section lies outside the file")
    bad("tensor_count_past_end.mpq", head(buf, "n_tensors", 1000), "a section lies outside the file")
    bad("args_past_end.mpq", head(buf, "n_args", h["n_args"] + 100), "a section lies outside the file")
    bad("strings_offset_wraps.mpq", head(buf, "strings_offset", 2**64 - 8), "a section lies outside the file")
    bad("calls_count_wraps.mpq", head(buf, "n_calls", 2**64 // CALL.size + 1), "a section lies outside the file")
    bad("data_past_end.mpq", head(buf, "data_bytes", h["data_bytes"] + 64), "a section lies outside the file")
    bad("sampler_past_end.mpq", head(buf, "sampler_bytes", size), "a section lies outside the file")
    bad("kernels_misaligned.mpq", head(buf, "kernels_offset", h["kernels_offset"] + 4), "a section is misaligned")
    bad("data_misaligned.mpq", head(head(buf, "data_offset", h["data_offset"] + 8), "data_bytes", h["data_bytes"] - 8),
        "a section is misaligned")
    bad("steps_0.mpq", head(buf, "n_steps", 0), "step count 0 out of range")
    bad("steps_100001.mpq", head(buf, "n_steps", 100001), "step count 100001 out of range")
    bad("calls_0.mpq", head(buf, "n_calls", 0), "call or tensor count out of range")
    bad("arena_over_1tib.mpq", head(buf, "arena_bytes", (1 << 40) + 64), "arena size out of range")
    bad("arena_above_limit.mpq", head(buf, "arena_bytes", (1 << 20) + 64),
        "the arena needs 1048640 bytes (1.0 MiB), above the memory limit of 1048576 bytes (1.0 MiB)",
        "max_arena=1048576")
    # 1 TiB passes the range check; the allocation fails (test_loader caps its address space)
    bad("arena_alloc_fails.mpq", head(buf, "arena_bytes", 1 << 40), "cannot allocate the 1099511627776-byte arena")
    bad("board_unterminated.mpq", head(buf, "board", b"b" * 32), "unterminated board, arch or features field")
    bad("arch_unterminated.mpq", head(buf, "arch", b"a" * 16), "unterminated board, arch or features field")
    bad("features_unterminated.mpq", head(buf, "features", b"f" * 128), "unterminated board, arch or features field")
    # the tensor table
    tp = lambda i, f, v, e=0: patch(buf, "mpq_art_tensor", i, f, v, e)  # noqa: E731
    bad("tensor_name_past_end.mpq", tp(W, "name_offset", h["strings_bytes"]), "tensor 0: bad name")
    bad("tensor_name_offset_huge.mpq", tp(BIAS, "name_offset", 2**32 - 1), "tensor 2: bad name")
    bad("tensor_name_len_past_end.mpq", tp(W, "name_len", h["strings_bytes"]), "tensor 0: bad name")
    bad("tensor_name_with_nul.mpq", tp(W, "name_len", 3), "tensor 0: bad name")
    bad("tensor_dtype.mpq", tp(W, "dtype", 4), "tensor w: bad dtype, kind or rank")
    bad("tensor_kind.mpq", tp(W, "kind", 5), "tensor w: bad dtype, kind or rank")
    bad("tensor_rank_0.mpq", tp(BIAS, "ndim", 0), "tensor bias: bad dtype, kind or rank")
    bad("tensor_rank_5.mpq", tp(BIAS, "ndim", 5), "tensor bias: bad dtype, kind or rank")
    bad("tensor_shape_0.mpq", tp(W, "shape", 0, 1), "tensor w: bad shape")
    bad("tensor_shape_negative.mpq", tp(W, "shape", -4, 0), "tensor w: bad shape")
    bad("tensor_shape_huge.mpq", tp(X, "shape", 1 << 40, 1), "tensor x: bad shape")
    bad("tensor_nbytes.mpq", tp(BIAS, "nbytes", 8), "tensor bias: size does not match its shape")
    bad("tensor_alias_later.mpq", tp(W_FLAT, "alias", X), "tensor w.flat: a view of a later tensor")
    bad("tensor_alias_self.mpq", tp(W_FLAT, "alias", W_FLAT), "tensor w.flat: a view of a later tensor")
    bad("tensor_alias_negative.mpq", tp(W_FLAT, "alias", -2), "tensor w.flat: bad alias")
    bad("tensor_view_kind.mpq", tp(H_TOKENS, "alias", W), "tensor h.tokens: view does not match its base")
    bad("const_offset_past_data.mpq", tp(W, "offset", h["data_bytes"]), "tensor w: data outside the data section")
    bad("const_offset_huge.mpq", tp(BIAS, "offset", 2**64 - 64), "tensor bias: data outside the data section")
    bad("const_offset_misaligned.mpq", tp(BIAS, "offset", 8), "tensor bias: data outside the data section")
    bad("act_offset_past_arena.mpq", tp(X, "offset", h["arena_bytes"]), "tensor x: outside the arena")
    bad("act_offset_misaligned.mpq", tp(Y, "offset", 4), "tensor y: outside the arena")
    bad("two_inputs.mpq", tp(Y, "kind", 2), "the plan needs exactly one input, timestep and output tensor")
    bad("no_output.mpq", tp(EPS, "kind", 1), "the plan needs exactly one input, timestep and output tensor")
    bad("timestep_int32.mpq", tp(T, "dtype", 2), "bad timestep tensor")
    bad("output_int32.mpq", tp(EPS, "dtype", 2), "input and output must be float32 [1, H, W, C] of one shape")
    # the sampler section
    sp = lambda f, v: patch(buf, "mpq_art_sampler", 0, f, v)  # noqa: E731
    bad("sampler_size.mpq", head(buf, "sampler_bytes", h["sampler_bytes"] - 8), "bad sampler size")
    bad("sampler_steps.mpq", sp("n_steps", 3), "sampler does not match the plan")
    bad("sampler_prediction.mpq", sp("prediction_type", 1), "sampler does not match the plan")
    bad("sampler_final_alpha_0.mpq", sp("final_alpha_cumprod", 0.0), "sampler final alpha_cumprod out of range")
    bad("sampler_final_alpha_nan.mpq", sp("final_alpha_cumprod", float("nan")),
        "sampler final alpha_cumprod out of range")
    bad("sampler_timestep_train.mpq", sampler_array(buf, "timesteps", 1, 1000), "sampler step 1 out of range")
    bad("sampler_timestep_negative.mpq", sampler_array(buf, "timesteps", 0, -1), "sampler step 0 out of range")
    bad("sampler_alpha_nan.mpq", sampler_array(buf, "alphas", 0, float("nan")), "sampler step 0 out of range")
    bad("sampler_alpha_above_1.mpq", sampler_array(buf, "alphas", 1, 1.5), "sampler step 1 out of range")
    # kernels, calls, arguments
    bad("kernel_name_past_end.mpq", patch(buf, "mpq_art_kernel", 0, "name_offset", 500), "kernel 0: bad name")
    bad("kernel_missing.mpq", replace_string(buf, b"fuzz_quantize", b"missing_quant"),
        "kernel __tvm_ffi_missing_quant is missing from this binary")
    cp = lambda i, f, v: patch(buf, "mpq_art_call", i, f, v)  # noqa: E731
    bad("call_kernel_index.mpq", cp(0, "kernel", 3), "call 0: bad kernel or argument range")
    bad("call_no_args.mpq", cp(1, "n_args", 0), "call 1: bad kernel or argument range")
    bad("call_17_args.mpq", cp(1, "n_args", 17), "call 1: bad kernel or argument range")
    bad("call_arg_index.mpq", cp(3, "first_arg", h["n_args"] - 3), "call 3: bad kernel or argument range")
    bad("call_arg_index_huge.mpq", cp(2, "first_arg", 2**32 - 2), "call 2: bad kernel or argument range")
    bad("call_op_past_end.mpq", cp(2, "op_offset", h["strings_bytes"] + 1), "call 2: bad kernel or argument range")
    bad("call_pad.mpq", cp(1, "pad", 1), "call conv: reserved field pad is 1, expected 0")
    ap = lambda i, f, v: patch(buf, "mpq_art_arg", i, f, v)  # noqa: E731
    bad("arg_tensor_index.mpq", ap(0, "tensor", 11), "call in.quantize: bad argument 0")
    bad("arg_flags.mpq", ap(5, "flags", 2), "call conv: bad argument 1")
    bad("arg_step_on_input.mpq", ap(0, "flags", 1), "call in.quantize: argument 0 is not a per-step tensor")
    bad("arg_step_on_matrix.mpq", ap(13, "flags", 1), "call conv_out: argument 1 is not a per-step tensor")
    bad("writes_const.mpq", ap(3, "tensor", BIAS), "call in.quantize writes a constant (read-only) tensor")
    bad("writes_step.mpq", patch(ap(3, "tensor", STEP_SCALE), "mpq_art_arg", 3, "flags", 1),
        "call in.quantize writes a constant (read-only) tensor")

    names = [c[0] for c in out]
    assert len(names) == len(set(names)), "duplicate file name"
    return out


def manifest(all_cases) -> str:
    lines = [f"{name} {opts + ' ' if opts else ''}" + ("ok" if msg is None else f"error {msg}")
             for name, _, msg, opts in all_cases]
    return MANIFEST_HEAD + "\n".join(lines) + "\n"


def write(out_dir: Path) -> int:
    """Replace the .mpq files and cases.txt in out_dir; returns the number of cases."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in out_dir.glob("*.mpq"):
        p.unlink()
    all_cases = cases()
    for name, blob, _, _ in all_cases:
        (out_dir / name).write_bytes(blob)
    (out_dir / "cases.txt").write_text(manifest(all_cases))
    return len(all_cases)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runtime/tests/data")
    print(f"{write(out)} cases into {out}")
