"""Work on a Ray cluster: `simgen generate`, `consistency` and `realism` with `--ray` (one actor pool each).

Ray runs simgen's own units of work, which are already independent and resumable: a run's shards
(dialogue i is a function of (seed, i)), a consistency check's chunks of dialogues, and batches of
texts for realism's sentence embeddings (these come back to the driver; nothing is written). The driver
(this process) keeps the record (the manifest, the saved chunks); the actors do the units:

- `--ray-workers` actors (a `Worker` subclass), each with `--ray-cpus` CPUs (its torch threads)
  and `--ray-gpus` GPUs, load their model(s) once (`load`) and keep them;
- `Pool.run` hands each actor one unit at a time; the actor writes its result into the run folder
  itself (atomically: whole or absent) and returns a small record, which the driver files;
- a worker that dies (node lost, actor killed, OOM) is restarted by Ray and its unit retried, at
  most `--ray-retries` times; a unit that still fails is reported, the finished ones are kept, and a
  rerun makes the rest. A file that no record lists does not count, so nothing half-written is
  ever taken as finished.

Checks before any unit runs: the cluster is reachable (before anything is written), every worker
sees the run folder (a probe file the driver writes there; a folder that is not on a shared
filesystem fails here), and every worker runs the driver's simgen version.

Test hook: `SIMGEN_RAY_FAULT=kill:UNIT:MARKER` makes the worker that has done UNIT (a shard or a
chunk number) write half of a file and SIGKILL itself, once (while MARKER does not exist). The tests
use it to kill a worker mid-unit; it is never set otherwise.

Environment: the driver's SIMGEN_*, HF_* and TRANSFORMERS_* variables are passed to the workers (the
model cache, offline mode). Ray must be installed on every node (`pip install simgen[ray]`), with
the same simgen.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simgen.errors import ConfigError, RunError, SimgenError

FORWARDED_ENV = ("SIMGEN_", "HF_", "TRANSFORMERS_")
NOT_STARTED = "not started: no worker was left"


@dataclass(frozen=True)
class RayConfig:
    """Where and how a run's shards run on Ray."""

    address: str = field(default="auto", metadata={"help": "the cluster: auto (RAY_ADDRESS, else a cluster this machine joined), HOST:PORT of its head, or ray://HOST:10001"})
    workers: int = field(default=2, metadata={"help": "actors, each loading the model once"})
    cpus: float = field(default=1.0, metadata={"help": "CPUs per actor (its torch threads)"})
    gpus: float = field(default=0.0, metadata={"help": "GPUs per actor"})
    retries: int = field(default=2, metadata={"help": "times a shard is retried after its worker died"})

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--ray-workers {self.workers}: use at least 1.")
        if self.cpus <= 0 or self.gpus < 0 or self.retries < 0:
            raise ConfigError(f"--ray-cpus {self.cpus} / --ray-gpus {self.gpus} / --ray-retries {self.retries}: "
                              "CPUs must be above 0, GPUs and retries 0 or more.")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RunError("--ray needs Ray, which is not installed: pip install 'simgen[ray]' (on every node of the "
                       "cluster too).") from e
    return ray


def _reachable(address: str) -> None:
    """A plain TCP connect to HOST:PORT (or ray://HOST:PORT) first: a wrong address fails in a second, not a minute."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise RunError(f"--ray {address!r}: expected auto, HOST:PORT or ray://HOST:PORT.")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise RunError(f"--ray {address}: cannot reach a Ray cluster there ({e.strerror or e}). Start one with "
                       "`ray start --head` (see the README's \"Many machines\"), or check the address.") from e


def connect(rc: RayConfig) -> bool:
    """Connect to the cluster; True when this call connected (and `disconnect` should undo it)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if rc.address != "auto":
        _reachable(rc.address)
    try:
        ray.init(address=rc.address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RunError(f"--ray {rc.address}: cannot connect to a Ray cluster ({e}). Start one with `ray start --head`, "
                       "set RAY_ADDRESS, or pass its address.") from e
    return True


def disconnect(connected: bool) -> None:
    if connected:
        import_ray().shutdown()


def simgen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simgen")
    except PackageNotFoundError:
        return "unknown"


class Worker:
    """An actor's code: `load` its models once; `hello` tells the driver who it is and whether it sees the folder."""

    def __init__(self, out: str, cpus: float, *args: Any) -> None:
        self.out, self.cpus, self.args = Path(out), cpus, args
        self.loaded: Any = None

    def load(self) -> Any:
        """Load what every unit needs (once); `info` of it goes to the driver."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {}

    def ensure(self) -> Any:
        if self.loaded is None:
            import torch

            torch.set_num_threads(max(1, int(self.cpus)))
            t = time.perf_counter()
            self.loaded = self.load()
            self.load_seconds = time.perf_counter() - t
        return self.loaded

    def hello(self, probe: str | None, token: str) -> dict[str, Any]:
        try:
            sees = probe is None or Path(probe).read_text(encoding="utf-8") == token
        except OSError:
            sees = False
        info = {"host": socket.gethostname(), "pid": os.getpid(), "simgen": simgen_version(), "sees_folder": sees}
        if sees and info["simgen"] == simgen_version():
            self.ensure()
            info |= {"load_seconds": self.load_seconds, **self.info()}
        return info

    def fault(self, unit: int, half: Path) -> None:
        """The test hook (module doc): write half of `half` and SIGKILL this process, once, on `unit`."""
        spec = os.environ.get("SIMGEN_RAY_FAULT", "")
        if spec.startswith("kill:"):
            _, which, marker = spec.split(":", 2)
            if int(which) == unit and not Path(marker).exists():
                Path(marker).write_text(f"killed pid {os.getpid()} on unit {unit}\n")
                half.write_bytes(b"PAR1 half a file")
                os.kill(os.getpid(), signal.SIGKILL)


def check_workers(hellos: list[dict[str, Any]], out: Path | None) -> None:
    """A `RunError` naming the first worker that runs another simgen or cannot see the run folder."""
    mine = simgen_version()
    for h in hellos:
        if h["simgen"] != mine:
            raise RunError(f"the Ray worker on {h['host']} (pid {h['pid']}) runs simgen {h['simgen']}, this driver simgen "
                           f"{mine}: install the same simgen on every node.")
        if not h["sees_folder"]:
            raise RunError(f"the Ray worker on {h['host']} (pid {h['pid']}) cannot see the run folder {out}: put it on a "
                           "filesystem every node mounts at the same path (NFS, a shared disk), and pass that path as --out.")


class Pool:
    """An actor pool of `worker` (a `Worker` subclass) on the connected cluster; `run` hands out units."""

    def __init__(self, worker: type[Worker], rc: RayConfig, out: Path | None, n: int, *args: Any) -> None:
        """out: the folder every worker must see (None: they write nothing, results come back to the driver)."""
        ray = import_ray()
        self.ray, self.rc, self.out = ray, rc, out
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        actor = ray.remote(worker).options(num_cpus=rc.cpus, num_gpus=rc.gpus, max_restarts=rc.retries,
                                           max_task_retries=rc.retries, runtime_env={"env_vars": env} if env else None)
        self.workers = [actor.remote(str(out or ""), rc.cpus, *args) for _ in range(max(1, min(rc.workers, n)))]

    def hello(self) -> list[dict[str, Any]]:
        """Every worker's hello (its model loaded), checked (`check_workers`)."""
        ray = self.ray
        probe, token = (self.out / f".ray-probe-{uuid.uuid4().hex[:8]}" if self.out else None), uuid.uuid4().hex
        if probe is not None:
            probe.write_text(token, encoding="utf-8")
        try:
            hellos = ray.get([w.hello.remote(str(probe) if probe else None, token) for w in self.workers])
        except ray.exceptions.RayTaskError as e:  # e.g. the model is not on that node: say so as simgen would here
            cause = getattr(e, "cause", None)
            if isinstance(cause, SimgenError):
                raise type(cause)(f"on a Ray worker: {cause}") from None
            raise RunError(f"a Ray worker failed while loading its model: {str(e).splitlines()[0][:300]}") from e
        finally:
            if probe is not None:
                probe.unlink(missing_ok=True)
        check_workers(hellos, self.out)
        return hellos

    def run(self, method: str, units: list[int], on_done: Callable[[int, Any], None]) -> dict[int, str]:
        """Call `method(unit)` on the workers, one unit per worker at a time; `on_done(unit, result)` as each
        finishes. Returns the units that failed for good (unit -> error); the others all finished."""
        ray = self.ray
        todo, pending, failed = deque(units), {}, {}

        def submit(worker: Any) -> None:
            if todo:
                unit = todo.popleft()
                pending[getattr(worker, method).remote(unit)] = (unit, worker)

        for w in self.workers:
            submit(w)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            unit, worker = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as e:
                failed[unit] = str(e).splitlines()[0][:300]
                continue  # this worker is gone for good (Ray's restarts are spent); the others go on
            on_done(unit, result)
            submit(worker)
        failed |= {u: NOT_STARTED for u in todo}
        return failed

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w, no_restart=True)


def failures(failed: dict[int, str], what: str, retries: int) -> str:
    """'1 shard(s) failed ... ([2]; shard 2: why); 1 not started ([3])' for `Pool.run`'s failures."""
    broken = {u: why for u, why in sorted(failed.items()) if why != NOT_STARTED}
    idle = sorted(u for u, why in failed.items() if why == NOT_STARTED)
    text = ""
    if broken:
        unit, why = next(iter(broken.items()))
        text = f"{len(broken)} {what}(s) failed on the cluster after {retries} retries each ({sorted(broken)}; {what} {unit}: {why})"
    if idle:
        text += ("; " if text else "") + f"{len(idle)} {what}(s) not started, no worker being left ({idle})"
    return text
