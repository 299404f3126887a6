"""A run's shards on a Ray cluster (`simgen generate --ray`; the pool itself: `simgen.cluster`).

Each actor loads the run's model(s) once; the driver hands it one stream of shards at a time
(`pipeline.streams`); it simulates the stream (`pipeline.simulate_stream`, the same code as on one
machine), writes the file of each shard the manifest lacks into the run folder and returns their
manifest entries, which the driver lists. The run is byte-identical to the one-machine run.
"""

from __future__ import annotations

import socket
from typing import Any

from simgen.cluster import Pool, RayConfig, Worker, failures
from simgen.errors import RunError


class ShardWorker(Worker):
    """args: the run's config (a dict), its recorded scenario and the shards already written."""

    def load(self) -> Any:
        from simgen.config import GenerateConfig
        from simgen.generation.pipeline import _backends
        from simgen.scenario import load_recorded

        config, scenario, _ = self.args
        cfg = GenerateConfig.from_dict(config)
        sc = load_recorded(scenario, "a Ray worker", "it would write other prompts than the driver's")
        user, assistant, _ = _backends(cfg, None, {})
        return cfg, sc, user, assistant

    def info(self) -> dict[str, Any]:
        _, _, user, assistant = self.loaded
        return {"backend": {"user": user.describe(), "assistant": assistant.describe()}}

    def run_stream(self, stream: int) -> list[dict[str, Any]]:
        from simgen.generation.pipeline import simulate_stream, streams
        from simgen.generation.run import SHARDS, shard_name, write_shard_file

        cfg, sc, user, assistant = self.ensure()
        shards, skip = streams(cfg)[stream], set(self.args[2])
        entries: list[dict[str, Any]] = []

        def write(shard: int, frame: Any, first: int, last: int, tokens: int, seconds: float) -> None:
            if shard not in skip:
                self.fault(stream, self.out / SHARDS / f".{shard_name(shard)}.tmp")
                entries.append(write_shard_file(self.out, shard, frame, first, last, tokens, seconds) | {"worker": socket.gethostname()})

        simulate_stream(shards, cfg, sc, user, assistant, write)
        return entries


def generate_shards(writer: Any, cfg: Any, rc: RayConfig, progress: bool) -> float | None:
    """Make every shard the manifest lacks on the cluster; the workers' model load time (None: nothing to do)."""
    from tqdm.auto import tqdm

    from simgen.generation.pipeline import streams

    manifest = writer.manifest
    todo = [n for n, stream in enumerate(streams(cfg)) if not set(stream) <= writer.done_shards]
    if not todo:
        return None
    out = writer.out.resolve()
    pool = Pool(ShardWorker, rc, out, len(todo), cfg.to_dict(), manifest["scenario"], sorted(writer.done_shards))
    bar = None
    try:
        hellos = pool.hello()
        manifest["backend"] = hellos[0]["backend"]
        manifest["cluster"] = {"address": rc.address, "workers": len(pool.workers), "cpus_per_worker": rc.cpus,
                               "gpus_per_worker": rc.gpus, "hosts": sorted({h["host"] for h in hellos})}
        manifest["status"] = "running"
        writer.save()
        bar = tqdm(total=cfg.n, initial=manifest["progress"]["dialogues_done"], unit="dlg",
                   desc=f"simgen on {len(pool.workers)} Ray workers", disable=not progress, dynamic_ncols=True)

        def done(stream: int, entries: list[dict[str, Any]]) -> None:
            for entry in entries:
                writer.record(entry)
                bar.update(entry["dialogues"][1] - entry["dialogues"][0] + 1)

        failed = pool.run("run_stream", todo, done)
        if failed:
            manifest["status"] = "interrupted"
            writer.save()
            raise RunError(f"{failures(failed, 'stream', rc.retries)} (a stream: --refill shards run through one batch). The other shards are saved in {out}; "
                           f"`simgen generate --resume {out}` makes the rest (with --ray, or on one machine).")
        return max(h["load_seconds"] for h in hellos)
    finally:
        if bar is not None:
            bar.close()
        pool.close()
