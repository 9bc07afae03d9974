"""Compile the Triton kernels of asyncsnn for an NVIDIA GPU without one (no launch).

    python benchmarks/triton_compile.py [--arch 90] [--out DIR]

Triton compiles for a target given by name; the machine needs no GPU, only Triton's bundled
``ptxas``. Each kernel is compiled for the configurations a run can take (plain or
current-based neurons, a readout or not, with or without the tape, both sorting paths), so
that an error of the compiled language (which Triton's interpreter does not check) shows
here; ``--out`` writes each kernel's PTX, and the script checks that the PTX has no fused
multiply-add (the kernels must round every product and sum as PyTorch does).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("run without TRITON_INTERPRET=1: the interpreter does not compile")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from asyncsnn.kernels import triton_async, triton_grad  # noqa: E402

F32, I32, I64, I8 = "*fp32", "*i32", "*i64", "*i8"

FORWARD_POINTERS = {
    "cur_ptr": F32, "seeds_ptr": I64, "beta_ptr": F32, "theta_ptr": F32, "alpha_ptr": F32,
    "sub_ptr": I8, "slot_of_ptr": I32, "slot_layer_ptr": I32, "fanout_ptr": I32,
    "row_wave_ptr": I32, "wave_start_ptr": I32, "dst_ptr": I32, "w_ptr": F32,
    "drop_hash_ptr": I64, "drop_p_ptr": F32, "v_ptr": F32, "syn_ptr": F32, "acc_ptr": F32,
    "refr_ptr": I32, "key_ptr": I64, "live_ptr": I32, "kv_ptr": I64, "chosen_ptr": I32,
    "spikes_ptr": F32, "fire_step_ptr": I32, "steps_ptr": I64, "synops_ptr": I64,
    "undelivered_ptr": I64, "checks_ptr": I32, "membrane_ptr": F32, "current_ptr": F32,
    "v_end_ptr": F32, "syn_end_ptr": F32, "overflow_ptr": I32, "tape_ptr": I32,
    "tape_steps_ptr": I32, "tape_start_ptr": I32,
}  # fmt: skip
BACKWARD_POINTERS = {
    **{k: v for k, v in FORWARD_POINTERS.items() if k in (
        "cur_ptr", "seeds_ptr", "beta_ptr", "theta_ptr", "alpha_ptr", "sub_ptr", "slot_of_ptr",
        "slot_layer_ptr", "fanout_ptr", "row_wave_ptr", "wave_start_ptr", "dst_ptr", "w_ptr",
        "drop_hash_ptr", "drop_p_ptr", "v_end_ptr", "syn_end_ptr", "steps_ptr", "tape_ptr",
        "tape_steps_ptr", "tape_start_ptr", "v_ptr", "syn_ptr", "acc_ptr", "refr_ptr",
        "key_ptr",
    )},
    "step_base_ptr": I32, "grad_spikes_ptr": F32, "grad_membrane_ptr": F32,
    "grad_rcurrent_ptr": F32, "grad_current_ptr": F32, "grad_w_ptr": "*fp64", "spk_ptr": F32,
    "lam_ptr": F32, "mu_ptr": F32, "dz_place_ptr": F32, "chk_code_ptr": I32,
    "chk_place_ptr": I32, "chk_v_ptr": F32, "chk_rows_ptr": I32, "ghosts_ptr": I32,
    "dz_ghost_ptr": F32,
}  # fmt: skip
FLOATS = {"lam", "p_refr", "lam_noise", "parameter"}
WIDE = {"h_random", "h_noise", "h_refr"}  # 32-bit hashes: passed as int64 when >= 2**31


def signature(fn, pointers: dict, constexprs: dict) -> dict:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = pointers[name]
        elif name.endswith("_ptr"):
            raise KeyError(f"{fn.__name__}: the pointer {name} has no type in this script")
        elif name in FLOATS:
            sig[name] = "fp32"
        elif name in WIDE:
            sig[name] = "i64"
        else:
            sig[name] = "i32"
    return sig


def configurations():
    blocks = {"BLOCK_N": 256, "BLOCK_E": 128}  # triton_async.Blocks on a GPU
    for synaptic in (False, True):
        for readout in (False, True):
            for record in (False, True):
                # triton_async.Blocks on a GPU (tl.sort of the queue, a small group ranked
                # by counting), the interpreter's ranking, and a group sorted by tl.sort
                # and each of those with and without the monitors' spike steps (STEPS)
                for rank, qb, gb in ((False, 256, 8), (True, 64, 8), (False, 256, 64)):
                    yield "forward", triton_async._forward, FORWARD_POINTERS, {
                        **blocks, "SYNAPTIC": synaptic, "MEMBRANE": readout,
                        "CURRENT": readout and synaptic, "RECORD": record, "BLOCK_Q": qb,
                        "QB": qb, "GB": gb, "RANK": rank, "STEPS": record == rank,
                    }  # fmt: skip
        for readout in (False, True):
            for kind in (0, 1):
                yield "backward", triton_grad._backward, BACKWARD_POINTERS, {
                    **blocks, "SYNAPTIC": synaptic, "MEMBRANE": readout,
                    "CURRENT": readout and synaptic, "KIND": kind,
                }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability (90: H100/H200)")
    ap.add_argument("--out", type=Path, default=None, help="write each kernel's PTX here")
    ap.add_argument("--first", action="store_true", help="one forward and one backward only")
    args = ap.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    done = set()
    start = time.perf_counter()
    for k, (name, fn, pointers, constexprs) in enumerate(configurations()):
        if args.first and name in done:
            continue
        done.add(name)
        src = ASTSource(fn=fn, signature=signature(fn, pointers, constexprs), constexprs=constexprs)
        t0 = time.perf_counter()
        options = {"num_warps": 4, "enable_fp_fusion": False}
        compiled = triton.compile(src, target=target, options=options)
        ptx = compiled.asm["ptx"]
        if "fma.rn.f32" in ptx:
            print(f"{name} {constexprs}: the PTX fuses a multiply-add", file=sys.stderr)
            return 1
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}_{k}.ptx").write_text(ptx)
        print(f"{name:8} compiled in {time.perf_counter() - t0:5.1f} s {constexprs}")
    print(f"all compiled for sm_{args.arch} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
