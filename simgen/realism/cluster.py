"""Realism's sentence embeddings on a Ray cluster (`simgen realism --ray`; the pool itself: `simgen.cluster`).

The distinct texts of a corpus are cut into parts of `PART` texts; each actor loads the embedding
model once and encodes the parts it is handed; the vectors come back to the driver, which caches
them as a one-machine run does (`embed.py`). Nothing is written on the workers, so no shared folder
is needed. The vectors equal the one-machine ones within float rounding (batches are made of other
neighbours; tests/cluster checks atol 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simgen.cluster import Pool, RayConfig, Worker, connect, disconnect, failures, import_ray
from simgen.errors import RunError

PART = 2048  # texts per unit of work


class EmbedWorker(Worker):
    """args: all the distinct texts (one object in Ray's store), texts per part, the encoder's batch
    size, and the precision the driver runs (so that every worker's vectors match its cache's tag)."""

    def load(self) -> Any:
        from simgen.realism.embed import _model

        return _model(self.args[3])

    def encode(self, k: int) -> np.ndarray:
        from simgen.realism.embed import encode_texts

        texts, part, batch_size, _ = self.args
        return encode_texts(self.ensure(), texts[k * part:(k + 1) * part], batch_size)


def encode(texts: list[str], batch_size: int, rc: RayConfig, precision: str | None = None, part: int = PART) -> np.ndarray:
    """(len(texts), dim) L2-normalised vectors of `texts`, encoded on the cluster in `precision`
    (default: the precision `embed` runs in on this machine, the driver)."""
    if precision is None:
        from simgen.realism.embed import precision as local

        precision = local()
    connected = connect(rc)
    try:
        ray = import_ray()
        n = math.ceil(len(texts) / part)
        pool = Pool(EmbedWorker, rc, None, n, ray.put(texts), part, batch_size, precision)
        parts: dict[int, np.ndarray] = {}
        try:
            pool.hello()
            failed = pool.run("encode", list(range(n)), parts.__setitem__)
        finally:
            pool.close()
        if failed:
            raise RunError(f"embedding: {failures(failed, 'part', rc.retries)}; run the check again, with or without --ray.")
        return np.concatenate([parts[k] for k in range(n)])
    finally:
        disconnect(connected)
