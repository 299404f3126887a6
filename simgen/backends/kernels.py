"""Native kernels for the line schedule's packed pass, compiled on first use.

    decode_attention()                      the loaded library, or None where it cannot be built
    attend(q, keys, values, rows, lens, scale)   what SDPA gives each decoding row, over its own length
    add_rms_norm(x, delta, weight, eps)     x += delta, then LlamaRMSNorm(x)
    rope_store(qkv, cos, sin, keys, values, rows, pos, heads)   rotary on a fused q/k/v output, keys and values into the cache
    silu_mul(gate_up)                       silu(gate) * up on a fused gate/up output
    pick(logits, seen, penalty, heat, top_p, min_p, u)   each row's next token (`transformers.pick_tokens`)

On a CPU, torch's SDPA runs the line schedule's decoding rows (`LineEngine._forward`: one new token
per row, three query heads per key/value head in SmolLM2) at a fifth to a tenth of the machine's
memory bandwidth: it takes one padded width per call and runs a small matrix product per (row, head).
`decode_attention.c` reads each row's keys and values once, over its own length, in float32
arithmetic (`benchmarks/line_pass.py` measures both). The same library does the rest of a layer's
element-wise work, which in torch is a dozen small ops per layer, each with its own dispatch and
pass over memory (`LineEngine._forward` uses them with fused projections; `line_pass.py --unfused`
is the torch way). Each rounds where the torch ops it replaces round, so rotary embedding gives
torch's very bytes, and a norm or activation differs from torch's by at most one rounding.

It is C, built with the machine's C compiler (`$CC`, else `cc`) and OpenMP into simgen's cache
(`kernels/`, keyed by the source, the compiler's version and the CPU's flags, since it is built for
this CPU: `-march=native`), the first time a run needs it: about a second. The library joins the
OpenMP runtime torch already loaded (the same `libgomp.so.1`), so it runs on torch's threads and
follows `torch.set_num_threads`. Where no compiler is found or the build fails, `decode_attention`
says why once (a warning) and returns None; the line schedule then keeps SDPA. `SIMGEN_KERNELS=0`
turns the kernel off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("decode_attention.c")
# Compiled with -ffast-math (so the softmax's expf vectorizes) but linked without it: GCC links
# crtfastmath.o into a library linked with -ffast-math, and loading that library would flush
# subnormal floats to zero in the whole process (every thread's MXCSR), not only in the kernel.
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c11"]
LINK = ["-shared", "-fopenmp"]

_loaded: dict[str, Any] = {}  # "lib": the library, or None once it failed


def _build(target_dir: Path) -> Path:
    """Compile `SOURCE` into `target_dir` (once per source, compiler and CPU); the library's path."""
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH (set CC to one)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    from simgen.models import cpu_flags

    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS + LINK), " ".join(sorted(cpu_flags()))]).encode()).hexdigest()[:16]
    lib = target_dir / f"decode_attention-{key}.so"
    if lib.exists():
        return lib
    target_dir.mkdir(parents=True, exist_ok=True)
    obj, tmp = (target_dir / f".{lib.stem}.{os.getpid()}.{suffix}" for suffix in ("o", "tmp"))
    try:
        for step in ([cc, *FLAGS, "-c", str(SOURCE), "-o", str(obj)], [cc, *LINK, str(obj), "-o", str(tmp), "-lm"]):
            done = subprocess.run(step, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed on {SOURCE.name}: {done.stderr.strip()[-500:]}")
        os.replace(tmp, lib)  # atomic: a concurrent build (a Ray worker) writes the same bytes
    finally:
        obj.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return lib


def decode_attention() -> Any:
    """The compiled kernel (a ctypes library), or None where it is off or cannot be built (said once)."""
    if "lib" in _loaded:
        return _loaded["lib"]
    lib = None
    if os.environ.get("SIMGEN_KERNELS", "1") != "0":
        from simgen.files import cache_root

        try:
            import torch  # noqa: F401  (its OpenMP runtime first, so the library joins it)

            lib = ctypes.CDLL(str(_build(cache_root() / "kernels")))
            p, i, f, d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double
            for name, args in (("decode_attention", [p] * 6 + [i] * 5 + [f, p]), ("add_rms_norm", [p] * 4 + [i] * 2 + [f]),
                               ("rope_store", [p] * 8 + [i] * 6), ("silu_mul", [p] * 2 + [i] * 2),
                               ("pick_tokens", [p, p, f, f, d, d, p, p, i, i])):
                for dtype in ("bf16", "f32"):
                    fn = getattr(lib, f"{name}_{dtype}")
                    fn.restype, fn.argtypes = (ctypes.c_int if name in ("rope_store", "pick_tokens") else None), args
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            warnings.warn(f"simgen: its compiled kernels are not available ({e}); the line schedule uses torch's SDPA and ops, "
                          "which are slower on a CPU. Install a C compiler with OpenMP (gcc) to build it.", RuntimeWarning, stacklevel=2)
            lib = None
    _loaded["lib"] = lib
    return lib


def attend(q: Any, keys: Any, values: Any, rows: Any, lens: Any, scale: float, work: Any = None) -> Any:
    """Each decoding row's attention output, as SDPA over its own valid slots would give it.

    q: (n, heads, groups, dim), contiguous; keys, values: the cache, (slots, heads, cap, dim),
    contiguous, of q's dtype (bfloat16 or float32); rows, lens: (n,) int64 tensors, the cache row
    each query reads and how many of its slots (>= 1); work: float32 scratch of at least
    n * heads * groups * cap elements (the caller's, reused across calls; else one is made). Needs
    `decode_attention()`."""
    import torch

    lib = decode_attention()
    n, heads, groups, dim = q.shape
    cap = keys.shape[2]
    # the kernel reads raw pointers: a wrong layout would read the wrong memory, so check what it assumes
    if not (all(t.device.type == "cpu" and t.is_contiguous() for t in (q, keys, values, rows, lens))
            and keys.dtype == values.dtype == q.dtype and rows.dtype == lens.dtype == torch.int64
            and keys.shape == values.shape and keys.shape[1] == heads and keys.shape[3] == dim and rows.shape == lens.shape == (n,)):
        raise ValueError(f"attend: q {tuple(q.shape)} {q.dtype}, keys {tuple(keys.shape)} {keys.dtype}, rows {tuple(rows.shape)} {rows.dtype}: "
                         "expected contiguous CPU tensors, q (n, heads, groups, dim), keys/values (slots, heads, cap, dim) of q's dtype, "
                         "rows/lens (n,) int64")
    fn = {torch.bfloat16: lib.decode_attention_bf16, torch.float32: lib.decode_attention_f32}[q.dtype]
    out = torch.empty_like(q)
    if work is None or work.numel() < n * heads * groups * cap:
        work = torch.empty(n * heads * groups * cap, dtype=torch.float32)
    fn(q.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), rows.data_ptr(), lens.data_ptr(),
       n, heads, groups, dim, cap, float(scale), work.data_ptr())
    return out


def _fn(name: str, *tensors: Any) -> Any:
    """The kernel's `name` for the tensors' dtype, once they are contiguous CPU tensors of one
    float dtype (bfloat16 or float32); a ValueError naming them otherwise (it reads raw pointers)."""
    import torch

    dtypes = {t.dtype for t in tensors}
    if not (all(t.device.type == "cpu" and t.is_contiguous() for t in tensors) and dtypes <= {torch.bfloat16, torch.float32}
            and len(dtypes) == 1):
        raise ValueError(f"{name}: expected contiguous CPU tensors of one dtype (bfloat16 or float32), got "
                         + ", ".join(f"{tuple(t.shape)} {t.dtype}{'' if t.is_contiguous() else ' (strided)'}" for t in tensors))
    lib = decode_attention()
    return getattr(lib, f"{name}_{'bf16' if tensors[0].dtype == torch.bfloat16 else 'f32'}")


def add_rms_norm(x: Any, delta: Any, weight: Any, eps: float) -> Any:
    """`x += delta` in place (unless delta is None), then the RMSNorm of x with `weight` (a new
    tensor), as transformers' LlamaRMSNorm computes it. x, delta: (..., hidden)."""
    import torch

    hidden = weight.shape[0]
    tensors = (x, weight) if delta is None else (x, delta, weight)
    fn = _fn("add_rms_norm", *tensors)
    if weight.dim() != 1 or x.shape[-1] != hidden or (delta is not None and delta.shape != x.shape):
        raise ValueError(f"add_rms_norm: x {tuple(x.shape)}, delta {None if delta is None else tuple(delta.shape)}, weight ({hidden},)")
    out = torch.empty_like(x)
    fn(x.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // hidden, hidden, float(eps))
    return out


def rope_store(qkv: Any, cos: Any, sin: Any, keys: Any, values: Any, rows: Any, pos: Any, heads: int) -> Any:
    """Split a fused q/k/v projection's output `qkv` (t, (heads + 2 kv_heads) dim), rotate queries
    and keys by `cos`, `sin` (t, dim) as transformers' apply_rotary_pos_emb does, write each key and
    value into the cache (slots, kv_heads, cap, dim) at row `rows[i]`, slot `pos[i]` (int64); the
    rotated queries, (t, heads, dim)."""
    import torch

    fn = _fn("rope_store", qkv, cos, sin, keys, values)
    t, (slots, kv_heads, cap, dim) = qkv.shape[0], keys.shape
    if not (qkv.shape == (t, (heads + 2 * kv_heads) * dim) and cos.shape == sin.shape == (t, dim) and values.shape == keys.shape
            and rows.dtype == pos.dtype == torch.int64 and rows.shape == pos.shape == (t,)
            and all(x.device.type == "cpu" and x.is_contiguous() for x in (rows, pos))):
        raise ValueError(f"rope_store: qkv {tuple(qkv.shape)}, cos {tuple(cos.shape)}, cache {tuple(keys.shape)}, rows/pos "
                         f"{tuple(rows.shape)} {rows.dtype}: expected qkv (t, (heads + 2 kv_heads) dim), cos/sin (t, dim), "
                         "rows/pos (t,) int64")
    q = qkv.new_empty((t, heads, dim))
    if fn(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), q.data_ptr(), keys.data_ptr(), values.data_ptr(), rows.data_ptr(), pos.data_ptr(),
          t, heads, kv_heads, dim, slots, cap):
        raise ValueError(f"rope_store: a row or slot outside the cache {tuple(keys.shape)} (rows {rows.tolist()}, pos {pos.tolist()})")
    return q


def silu_mul(gate_up: Any) -> Any:
    """silu(gate) * up for `gate_up` (..., 2 inter) holding gate then up (a fused projection's output)."""
    fn = _fn("silu_mul", gate_up)
    if gate_up.shape[-1] % 2:
        raise ValueError(f"silu_mul: gate_up {tuple(gate_up.shape)}: its last dimension holds gate then up, so it must be even")
    inter = gate_up.shape[-1] // 2
    out = gate_up.new_empty((*gate_up.shape[:-1], inter))
    fn(gate_up.data_ptr(), out.data_ptr(), gate_up.numel() // (2 * inter), inter)
    return out


def pick(logits: Any, seen: Any, penalty: float, heat: float, top_p: float, min_p: float, u: Any) -> Any:
    """Each row's next token: `logits` (rows, vocab) scaled as `transformers.pick_tokens` scales
    them (the repetition penalty where `seen`, a (rows, vocab) bool tensor or None; then 1 / heat),
    cut to top-p and min-p (the kept set found in order of probability, ties by id), and drawn at
    `u` (rows,) float64 uniforms in [0, 1): the token where the kept set's cumulative mass, summed
    in token id order, passes u times its total. (rows,) int64."""
    import torch

    fn = _fn("pick_tokens", logits)
    rows, vocab = logits.shape if logits.dim() == 2 else (0, 0)
    if not (logits.dim() == 2 and u.dtype == torch.float64 and u.shape == (rows,) and u.is_contiguous() and u.device.type == "cpu"
            and (seen is None or (seen.dtype == torch.bool and seen.shape == logits.shape and seen.is_contiguous()
                                  and seen.device.type == "cpu"))):
        raise ValueError(f"pick: logits {tuple(logits.shape)}, seen {None if seen is None else (tuple(seen.shape), seen.dtype)}, "
                         f"u {tuple(u.shape)} {u.dtype}: expected logits (rows, vocab), seen None or a bool tensor of its shape, "
                         "u (rows,) float64, all contiguous on the CPU")
    out = torch.empty(rows, dtype=torch.int64)
    if fn(logits.data_ptr(), None if seen is None else seen.data_ptr(), float(penalty), float(heat), float(top_p), float(min_p),
          u.data_ptr(), out.data_ptr(), rows, vocab):
        raise ValueError("pick: a row has no finite logit, so no token can be drawn")
    return out
