"""simgen: synthetic multi-turn conversations with controllable simulated users.

Importing simgen is cheap: it does not import torch or transformers. The public API is loaded on
first attribute access:

    import simgen
    run = simgen.generate(scenario="movie-recommendation", n=20, seed=0)
    run.turns  # polars DataFrame, one row per turn
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simgen.lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> "module:attribute", resolved on first access
_LAZY = {
    "generate": "simgen.generation.pipeline:generate",
    "Run": "simgen.generation.run:Run",
    "load_run": "simgen.generation.run:load_run",
    "load_scenario": "simgen.scenario:load_scenario",
    "GenerateConfig": "simgen.config:GenerateConfig",
    "SamplingConfig": "simgen.config:SamplingConfig",
    "SimgenError": "simgen.errors:SimgenError",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from simgen.config import GenerateConfig, SamplingConfig
    from simgen.errors import SimgenError
    from simgen.generation.pipeline import generate
    from simgen.generation.run import Run, load_run
    from simgen.scenario import load_scenario


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
