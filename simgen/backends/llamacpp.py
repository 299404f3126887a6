"""llama.cpp's server in this process (the `xllamacpp` wheel), serving a GGUF on 127.0.0.1.

    with serve_gguf(parallel=16) as url:          # the embedded SmolLM2 GGUF by default
        simgen.generate(backend="openai", server=ServerConfig(base_url=url), model="smollm2", ...)

It is what the throughput benchmark compares simgen against and what the OpenAI-backend tests talk
to: a real OpenAI-compatible server, no network needed. `xllamacpp` is a dev dependency; a user who
lacks it gets a clear error.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from simgen.errors import ConfigError


@contextmanager
def serve_gguf(path: str | Path | None = None, parallel: int = 4, ctx_per_slot: int = 2048, threads: int | None = None,
               api_keys: Sequence[str] = (), cache_prompt: bool = True) -> Iterator[str]:
    """Serve `path` (default: the embedded model's GGUF) with `parallel` slots; yields the `/v1` URL."""
    try:
        import xllamacpp as xlc
    except ImportError:
        raise ConfigError("serving a GGUF in-process needs the xllamacpp wheel: pip install xllamacpp") from None
    from simgen.models import embedded_gguf

    params = xlc.CommonParams()
    params.model.path = str(path or embedded_gguf())
    params.n_parallel = parallel
    params.n_ctx = ctx_per_slot * parallel  # llama.cpp splits n_ctx across the slots
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads or os.cpu_count() or 1
    params.cache_prompt = cache_prompt
    params.api_keys = list(api_keys)
    params.verbosity = 0
    server = xlc.Server(params)
    try:
        yield server.listening_address + "/v1"
    finally:
        del server
        gc.collect()
