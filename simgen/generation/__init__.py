"""Generation: profiles -> latents -> templates -> simulator <-> backend -> run folder.

    plan.py       dialogue i's profile and intent path, from (seed, i) alone
    chats.py      each side's chat from the templates; rebuilt the same way by checks and exports
    simulator.py  the batched dialogue loop and its stop rules
    run.py        run folders: atomic shards, the manifest, `Run`, `load_run`, reading a chunk at a time
    pipeline.py   `generate` / `resume`: where the stages meet
    cluster.py    the same shards on a Ray cluster (`--ray`; the actor pool: simgen.cluster)

Importing this package is cheap (no torch); names load on first use. It imports the data model,
the scenario and the backends, never a check or an export.
"""

from __future__ import annotations

from simgen.lazy import lazy_getattr

# public name -> "module:attribute", resolved on first access
_LAZY = {
    "generate": "simgen.generation.pipeline:generate",
    "resume": "simgen.generation.pipeline:resume",
    "plan": "simgen.generation.plan:plan",
    "DialogueJob": "simgen.generation.plan:DialogueJob",
    "simulate": "simgen.generation.simulator:simulate",
    "Run": "simgen.generation.run:Run",
    "load_run": "simgen.generation.run:load_run",
    "RayConfig": "simgen.cluster:RayConfig",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
