"""A consistency check's chunks on a Ray cluster (`simgen consistency --ray`; the pool itself: `simgen.cluster`).

The check already works in chunks of dialogues that it saves as they finish (`check.Parts`) and
reads back on a rerun. On Ray, the actors score the chunks and save them into RUN/consistency.parts/
(each actor loads the judge and the run's simulator once), then the driver runs the check as on one
machine: every chunk is read back, the persona axis is fitted over all of them and the sidecar and
reports are written. The scores equal the one-machine scores within float rounding (the actors use
their own torch threads; tests/cluster checks atol 1e-5).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simgen.cluster import Pool, RayConfig, Worker, connect, disconnect, failures
from simgen.errors import ConfigError, RunError


def _normal(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state, default=str))


class ChunkWorker(Worker):
    """args: the judge's (spec, settings), the check's config (a dict), the driver's `Parts` state, the parts folder."""

    def load(self) -> Any:
        from simgen.consistency.check import Parts, plan_chunks, run_models
        from simgen.consistency.judges import load_judge
        from simgen.consistency.metrics import ConsistencyConfig
        from simgen.generation.run import load_run

        (spec, settings), config, state, folder = self.args
        run = load_run(self.out)
        config = ConsistencyConfig(**config)
        judge = load_judge(spec, **settings)
        scenario, simulator, _ = run_models(run, judge, config)
        plan = plan_chunks(run.scan(), judge, scenario=scenario, simulator=simulator,
                           max_turns=run.max_turns, config=config)
        if _normal(plan.state) != _normal(state):
            diff = sorted(k for k in state if _normal(plan.state).get(k) != _normal(state).get(k))
            raise RunError(f"a Ray worker would score {self.out} with other {', '.join(diff)} than the driver: "
                           "install the same simgen and models on every node.")
        return judge, scenario, simulator, config, plan, Parts(folder, state)

    def score(self, k: int) -> dict[str, Any]:
        from simgen.consistency.check import score_chunk

        judge, scenario, simulator, config, plan, parts = self.ensure()
        ids = plan.chunks()[k]
        chunk = score_chunk(plan, k, judge, scenario, simulator, config)
        self.fault(k, parts.folder / f"{k:05d}.parquet")  # a chunk without its index file never counts
        parts.save(k, ids, chunk)
        return {"chunk": k, "dialogues": len(ids)}


def score_parts(run: Any, judge: Any, config: Any, plan: Any, rc: RayConfig, progress: bool, folder: Path) -> None:
    """Score every chunk not yet saved in `folder` (the run's `check.PARTS`, or --out's) on the cluster; a `RunError`
    lists those that failed."""
    from tqdm.auto import tqdm

    from simgen.consistency.check import Parts

    if judge.spec is None:
        raise ConfigError("--ray needs the judge as a spec (e.g. 'llm' or 'llm:/path/to/model'), which every worker "
                          "loads again; this judge was built in Python.")
    connected = connect(rc)  # an unreachable cluster fails here, before the parts folder is touched
    try:
        saved = Parts(folder, plan.state)
        chunks = plan.chunks()
        todo = [k for k, ids in enumerate(chunks) if saved.load(k, ids) is None]
        if not todo:
            return
        pool = Pool(ChunkWorker, rc, run.path.resolve(), len(todo), judge.spec, asdict(config), plan.state, str(Path(folder).resolve()))
        try:
            pool.hello()
            with tqdm(total=len(plan.ids), initial=len(plan.ids) - sum(len(chunks[k]) for k in todo), unit="dialogue",
                      desc=f"consistency on {len(pool.workers)} Ray workers", disable=not progress) as bar:
                failed = pool.run("score", todo, lambda k, result: bar.update(result["dialogues"]))
        finally:
            pool.close()
        if failed:
            raise RunError(f"{run.path}: {failures(failed, 'chunk', rc.retries)}. The other chunks are saved; run "
                           f"`simgen consistency {run.path}` again (with --ray, or on one machine) to score the rest.")
    finally:
        disconnect(connected)
