"""A native kernel for the line schedule's decoding rows, compiled on first use.

    decode_attention()                      the loaded kernel, or None where it cannot be built
    attend(q, keys, values, rows, lens, scale)   what SDPA gives each decoding row, over its own length

On a CPU, torch's SDPA runs the line schedule's decoding rows (`LineEngine._forward`: one new token
per row, three query heads per key/value head in SmolLM2) at a fifth to a tenth of the machine's
memory bandwidth: it takes one padded width per call and runs a small matrix product per (row, head).
`decode_attention.c` reads each row's keys and values once, over its own length, in float32
arithmetic (`benchmarks/line_pass.py` measures both).

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
            for name in ("decode_attention_bf16", "decode_attention_f32"):
                fn = getattr(lib, name)
                fn.restype = None
                fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 5 + [ctypes.c_float, ctypes.c_void_p]
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            warnings.warn(f"simgen: the decode attention kernel is not available ({e}); the line schedule uses torch's SDPA, "
                          "which is slower on a CPU. Install a C compiler with OpenMP (gcc) to build it.", RuntimeWarning, stacklevel=2)
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
