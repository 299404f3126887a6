"""`simgen.generate`: profiles -> latents -> templates -> simulator <-> backend -> run folder.

This is the one place the stages meet. It validates everything that can be validated before a
model loads (scenario, templates, output folder), then walks the run in shards of `batch_size`
dialogues: plan each dialogue from (seed, index), simulate a stream of `refill` shards through one
batch that refills as dialogues end, write each shard as its last dialogue ends. A resumed run
reruns the streams whose shards its manifest does not all list, from their first shard, and writes
the missing ones, so it ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from simgen.backends import LOCAL, Backend, backend_class, build_backend
from simgen.backends.steering import CappedBackend
from simgen.cluster import RayConfig
from simgen.config import REFILL, TUNED_TEMPERATURE, UNTUNED_PENALTY, UNTUNED_TEMPERATURE, GenerateConfig, SamplingConfig
from simgen.copies import COPY_INDEX, CopyIndex
from simgen.data import dialogues_to_frame
from simgen.errors import ConfigError, RunError, unknown_name
from simgen.files import atomic_write_json, now
from simgen.generation.plan import longest_first, plan
from simgen.generation.run import (FORMAT_VERSION, MANIFEST, Run, RunWriter, check_manifest, holds_no_run, load_run,
                                   package_versions, prepare_out_dir, remove_leftovers)
from simgen.generation.simulator import simulate
from simgen.models import is_tuned, resolve_model, tuned_max_length
from simgen.scenario import Scenario, load_recorded, load_scenario


OUTPUTS = Path("outputs")


def default_out_dir(cfg: GenerateConfig) -> Path:
    """`outputs/<scenario>-n<N>-seed<SEED>`, always one folder directly inside `outputs/`.

    The scenario part is the file's stem with anything but letters, digits, `.`, `_` and `-`
    replaced and leading dots dropped, so no scenario name or path (`../../x`, `/etc/x.yaml`)
    can place the run elsewhere.
    """
    name = Path(cfg.scenario).stem if cfg.scenario.endswith((".yaml", ".yml")) else Path(cfg.scenario).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "scenario"
    return OUTPUTS / f"{name}-n{cfg.n}-seed{cfg.seed}"


def generate(
    config: GenerateConfig | None = None,
    *,
    out: str | Path | None = None,
    assistant: Callable[[list[dict]], str] | Backend | None = None,
    progress: bool = True,
    temperature: float | None = None,
    assistant_sampling: SamplingConfig | None = None,
    ray: RayConfig | None = None,
    **settings: Any,
) -> Run:
    """Generate dialogues into a run folder and return the `Run`.

    `settings` are `GenerateConfig` fields (scenario, n, seed, model, max_turns, batch_size, dtype,
    user, ...), set over `config` (default: `GenerateConfig()`), so defaults live in one place:

        simgen.generate(scenario="chitchat", n=50, seed=1, out="outputs/chat")
        simgen.generate(config=my_config, n=10)          # my_config with n=10

    `temperature` sets both sides' temperature (0 = greedy); `assistant_sampling` is the assistant
    side's `SamplingConfig` (the `assistant` field's, named apart from the argument below).
    `assistant` replaces the assistant side with your own function (`messages -> str`) or backend.
    `ray` runs the shards on a Ray cluster (`simgen.generation.cluster`); the run is the same.
    """
    known = {f.name for f in fields(GenerateConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(unknown_name("setting", unknown[0], known))
    config = config or GenerateConfig()
    if "scenario" in settings:  # a Path is fine too
        settings["scenario"] = str(settings["scenario"])
    if assistant_sampling is not None:
        settings["assistant"] = assistant_sampling
    if settings:
        config = replace(config, **settings)
    if temperature is not None:
        config = replace(config, user=replace(config.user, temperature=temperature),
                         assistant=replace(config.assistant, temperature=temperature))
    sc = load_scenario(config.scenario)  # fails on a bad scenario before any folder or model is touched
    if config.refill is None and ray is not None:  # a Ray worker runs one stream: one shard each spreads the run
        config = replace(config, refill=1)
    config = settle(config, sc)
    cls = backend_class(config.backend)
    if config.persona.cap is not None and not cls.scorer:
        raise ConfigError(f"--persona-cap steers the model's activations; the {cls.name} backend cannot. Use --backend transformers.")
    for side, budget in (("user", config.user.context), ("assistant", None if assistant else config.assistant.context)):
        if budget and not hasattr(cls, "encode"):  # what `simulator._windowed` counts a prompt's tokens with
            raise ConfigError(f"--context {budget} ({side} side): the {cls.name} backend cannot count a prompt's tokens; "
                              "leave --context at 0 with it, or use --backend transformers.")
    config = _resolve_schedule(config, assistant)
    if assistant is not None and config.assistant.context:  # your function always gets the whole history
        config = replace(config, assistant=replace(config.assistant, context=0))
    # a missing model or an unreachable server fails before the folder exists; what was built to know is kept
    prebuilt = {spec: b for spec in {config.model, config.assistant_model or config.model}
                if (b := cls.precheck(config, spec)) is not None}
    out = Path(out) if out is not None else default_out_dir(config)
    with _cluster(ray, assistant):  # an unreachable cluster fails before the folder exists
        prepare_out_dir(out)
        manifest = _new_manifest(config, sc, out, assistant)
        atomic_write_json(out / MANIFEST, manifest)
        return _run(out, manifest, config, sc, assistant, progress, prebuilt, ray)


def _resolve_schedule(config: GenerateConfig, assistant: Any) -> GenerateConfig:
    """`config` with its schedule settled: `auto` becomes lines where they can run, else calls; an
    explicit `lines` that cannot run is a ConfigError (before the run folder exists)."""
    why = _line_schedule_unfit(config, assistant)
    if config.schedule == "lines" and why:
        raise ConfigError(f"--schedule lines: {why}; use --schedule calls.")
    if config.schedule == "auto":
        config = replace(config, schedule="calls" if why else "lines")
    return config


def _line_schedule_unfit(config: GenerateConfig, assistant: Any) -> str | None:
    """Why the settled `config` cannot run `--schedule lines`, or None. (The loaded model is checked
    again: `simulator.line_schedule_problem`.)"""
    from simgen.backends.lines import model_problem

    if config.backend != LOCAL:
        return f"it runs a local transformers model, not --backend {config.backend}"
    if assistant is not None or config.persona.cap is not None or (config.assistant_model or config.model) != config.model:
        return "both sides must be written by the same model (no --assistant-model, assistant function or --persona-cap)"
    return model_problem(json.loads((resolve_model(config.model, config.trust_remote_code).path / "config.json").read_text()))


def settle(config: GenerateConfig, sc: Scenario) -> GenerateConfig:
    """`config` with what it leaves to the scenario and the models filled in, as the manifest records
    it: the scenario's `max_turns`, its shipped tuned simulator (when no model is named and the
    backend is local), `refill` (REFILL shards a stream) and each side's repetition penalty and
    temperature (`resolve_sampling`)."""
    if config.max_turns is None:
        config = replace(config, max_turns=sc.max_turns)
    if config.refill is None:
        config = replace(config, refill=REFILL)
    if config.model is None and sc.simulators and config.backend == LOCAL:
        # the scenario ships tuned simulators: each writes its side (`Scenario.sides`); the plain model the rest
        sides = sc.sides()
        config = replace(config, model=sides["user"], assistant_model=config.assistant_model or sides["assistant"])
    return resolve_sampling(config)


def resolve_sampling(config: GenerateConfig) -> GenerateConfig:
    """`config` with each side's unset repetition penalty and temperature set from the model that writes it.

    A side a `simgen tune` folder writes gets no penalty (1) and temperature 1: that model learned
    people's own lines, and people repeat words ("movie", "seen", "good"); a penalty counted over the
    whole chat, prompt included, pushed it onto rarer words, and simgen's discriminators told its
    lines apart by them; a temperature under 1 favoured its likelier lines over the spread of
    people's (README, "Sim-to-real"). Any other model gets 1.15 and 0.8 (user) / 0.7 (assistant),
    which keep an untuned small model out of loops and nonsense. An unset `context` is, for a tuned
    side, the card's max length less the side's max new tokens: `simgen tune` dropped the oldest
    exchanges of its examples to fit that length, so the simulator is prompted with as much history
    as it learned from, not the whole of a long dialogue (README, "Sim-to-real"); any other model
    gets the whole history (0). A value the caller set is kept; the manifest records the values
    either way (a run recorded before `context` existed has none, and resumes with the whole history)."""
    sides = {"user": config.model, "assistant": config.assistant_model or config.model}
    changes = {}
    for side, spec in sides.items():
        sampling = getattr(config, side)
        tuned = config.backend == LOCAL and is_tuned(spec)
        if sampling.repetition_penalty is None:
            sampling = replace(sampling, repetition_penalty=1.0 if tuned else UNTUNED_PENALTY)
        if sampling.temperature is None:
            sampling = replace(sampling, temperature=TUNED_TEMPERATURE if tuned else UNTUNED_TEMPERATURE[side])
        if sampling.context is None:
            learned = tuned_max_length(spec) if tuned else None
            sampling = replace(sampling, context=max(1, learned - sampling.max_new_tokens) if learned else 0)
        if sampling != getattr(config, side):
            changes[side] = sampling
    return replace(config, **changes) if changes else config


@contextmanager
def _cluster(ray: RayConfig | None, assistant: Any) -> Iterator[None]:
    """Connected to the Ray cluster for the block (and disconnected after, if this connected)."""
    if ray is None:
        yield
        return
    if assistant is not None:
        raise ConfigError("--assistant with --ray: your assistant function runs in this process only; run without --ray, "
                          "or serve your assistant over HTTP and use --backend openai.")
    from simgen.cluster import connect, disconnect

    connected = connect(ray)
    try:
        yield
    finally:
        disconnect(connected)


def resume(path: str | Path, assistant: Callable[[list[dict]], str] | Backend | None = None, progress: bool = True,
           ray: RayConfig | None = None) -> Run:
    """Finish an interrupted run with the config its manifest recorded (`ray`: on a cluster, wherever it started)."""
    out = Path(path)
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        if out.is_dir() and holds_no_run(out):
            raise RunError(f"--resume {out}: the run was stopped before it wrote {MANIFEST}, so no settings were saved. "
                           f"Run the original `simgen generate` command again with --out {shlex.quote(str(out))}; the folder is reused.")
        raise RunError(f"--resume {out}: no {MANIFEST} there, so there is nothing to resume. Start a new run with --out.")
    try:
        manifest = json.loads(manifest_path.read_text())
        raw = manifest["config"]
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{manifest_path}: unreadable manifest ({e}); the run cannot be resumed.") from None
    if manifest.get("status") == "complete":
        remove_leftovers(out)  # a run killed while it cleaned up after itself
        return load_run(out)
    check_manifest(manifest, manifest_path)
    try:
        config = GenerateConfig.from_dict(raw)
    except TypeError as e:  # an unknown or missing setting
        raise RunError(f"{manifest_path}: the recorded config does not match this simgen's settings ({e}); "
                       "resume with the simgen version that started the run, or start a new run.") from None
    config = pinned_dtype(config, manifest)
    sc = load_recorded(manifest["scenario"], f"--resume {out}",
                       "the rest of the run would be written from other prompts than its finished dialogues")
    if manifest.get("backend", {}).get("assistant", {}).get("backend") == "callable" and assistant is None:
        raise RunError(f"--resume {out}: the run's assistant was {manifest['backend']['assistant'].get('callable')}; pass it again (--assistant).")
    with _cluster(ray, assistant):
        return _run(out, manifest, config, sc, assistant, progress, ray=ray)


def pinned_dtype(config: GenerateConfig, manifest: dict[str, Any]) -> GenerateConfig:
    """`config` with `--dtype auto` replaced by the dtype its models loaded in, as the manifest
    recorded it: the rest of a resumed run is written in the precision of its first shards, even
    where `auto` would now choose another (another machine, or a simgen whose choice changed)."""
    recorded = {side.get("dtype") for side in manifest.get("backend", {}).values() if isinstance(side, dict)} - {None}
    if config.dtype == "auto" and len(recorded) == 1 and (dtype := recorded.pop()) in ("bfloat16", "float32"):
        return replace(config, dtype=dtype)
    return config


def _new_manifest(cfg: GenerateConfig, sc: Scenario, out: Path, assistant: Any) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "status": "running",
        "created": now(),
        "finished": None,
        "out": str(out),
        "seed": cfg.seed,
        "n": cfg.n,
        "scenario": sc.describe(),
        "config": cfg.to_dict(),
        "backend": _declared_assistant(assistant),  # the models' descriptions are added once they load
        "versions": package_versions(),
        "progress": {"batch_size": cfg.batch_size, "n_shards": math.ceil(cfg.n / cfg.batch_size), "dialogues_done": 0, "shards": []},
        "counts": {},
        "timings": {},
    }


def _declared_assistant(assistant: Any) -> dict[str, Any]:
    """{"assistant": description} for an assistant the caller passed, so a run killed before its
    models loaded still knows on resume that it needs it; else {}."""
    from simgen.backends.callable import CallableBackend

    if assistant is None:
        return {}
    return {"assistant": (assistant if isinstance(assistant, Backend) else CallableBackend(assistant)).describe()}


def _backends(cfg: GenerateConfig, assistant: Any, prebuilt: dict[str | None, Backend]) -> tuple[Backend, Backend, list[Backend]]:
    """(user side, assistant side, the backends built here: the caller closes them once the run ends).

    `prebuilt` maps a model spec to a backend `generate` already built while checking it.
    """
    from simgen.backends.callable import CallableBackend

    built: list[Backend] = []

    def load(spec: str | None) -> Backend:
        backend = prebuilt.pop(spec, None) or build_backend(cfg, spec)
        built.append(backend)
        return backend

    model = load(cfg.model)
    user: Backend = model if cfg.persona.cap is None else CappedBackend.from_spec(model, cfg.persona.cap, cfg.persona.axis)
    if isinstance(assistant, Backend):
        other = assistant
    elif assistant is not None:
        other = CallableBackend(assistant)
    elif cfg.assistant_model is None or cfg.assistant_model == cfg.model:
        other = model
    else:
        other = load(cfg.assistant_model)
    for unused in prebuilt.values():
        unused.close()
    return user, other, built


def _run(out: Path, manifest: dict[str, Any], cfg: GenerateConfig, sc: Scenario, assistant: Any, progress: bool,
         prebuilt: dict[str | None, Backend] | None = None, ray: RayConfig | None = None) -> Run:
    """Generate the shards the manifest lacks (here, or on Ray), then merge them. On Ctrl-C the
    finished shards stay, stderr says how to resume, and `KeyboardInterrupt` propagates (the CLI exits 130)."""
    writer = RunWriter(out, manifest)
    try:
        if ray is not None:
            from simgen.generation.cluster import generate_shards

            for unused in (prebuilt or {}).values():
                unused.close()
            load_seconds = generate_shards(writer, cfg, ray, progress)
        else:
            load_seconds = _generate_shards(writer, cfg, sc, assistant, progress, dict(prebuilt or {}))
        shards = manifest["progress"]["shards"]
        gen_seconds = sum(s["seconds"] for s in shards)
        tokens = sum(s["tokens"] for s in shards)
        writer.finish({
            **({"load_seconds": round(load_seconds, 3)} if load_seconds is not None else {}),
            "generate_seconds": round(gen_seconds, 3),
            "dialogues_per_min": round(cfg.n / gen_seconds * 60, 2) if gen_seconds else None,
            "tokens_per_s": round(tokens / gen_seconds, 1) if gen_seconds else None,
        })
    except KeyboardInterrupt:
        if manifest["status"] != "complete":
            manifest["status"] = "interrupted"
            writer.save()
        print(f"\nInterrupted; finished shards are saved in {out}. Resume with: simgen generate --resume {shlex.quote(str(out))}",
              file=sys.stderr, flush=True)
        raise
    return load_run(out)


def trained_lines(backend: Backend) -> CopyIndex | None:
    """The copy index of the lines `backend`'s model was trained on: a `simgen tune` folder's
    `trained_lines.npz`; None for any other model, a server or your own function. A user side under
    `--persona-cap` is its inner backend's model, capped."""
    backend = getattr(backend, "inner", backend)
    spec = getattr(getattr(backend, "source", None), "id", None)
    if not is_tuned(spec):
        return None
    path = Path(spec).expanduser() / COPY_INDEX
    return _copy_index(str(path)) if path.is_file() else None


@functools.lru_cache(maxsize=4)
def _copy_index(path: str) -> CopyIndex:
    return CopyIndex.load(path)


def redraw_guards(cfg: GenerateConfig, sc: Scenario, user_backend: Backend, assistant_backend: Backend) -> dict[str, Any]:
    """`simulate`'s `copy_guard`, `intent_guard`, `realism_guard` and dialogue guard as `cfg` asks for them: each
    side's copy index (`trained_lines`), the scenario's intent guard, its realism guards and its dialogue guard. What `simulate_stream` and
    `export.stream.DialogueStream` both pass, so a streamed dialogue is the run's."""
    sides = (("user", user_backend), ("assistant", assistant_backend))
    return {"copy_guard": {side: trained_lines(b) if cfg.copy_guard else None for side, b in sides},
            "intent_guard": sc.intent_guard if cfg.intent_guard else None,
            "realism_guard": dict(sc.realism_guards) if cfg.realism_guard else None,
            "dialogue_guard": sc.dialogue_guard, "dialogue_redraws": cfg.dialogue_redraws}


def streams(cfg: GenerateConfig) -> list[list[int]]:
    """The run's shards in streams of `cfg.refill`: the unit that one batch runs with refilling
    (`simulate_stream`), here or on a Ray worker, and that a resumed run reruns whole."""
    n_shards = math.ceil(cfg.n / cfg.batch_size)
    return [list(range(s, min(s + cfg.refill, n_shards))) for s in range(0, n_shards, cfg.refill)]


def simulate_stream(shards: list[int], cfg: GenerateConfig, sc: Scenario, user_backend: Backend, assistant_backend: Backend,
                    on_shard: Callable[[int, Any, int, int, int, float], None], on_step: Callable[[int, int], None] | None = None,
                    on_dialogue: Callable[[int], None] | None = None) -> None:
    """Simulate the dialogues of `shards` (consecutive; shard s holds dialogues s*batch_size ...) as
    one stream through `cfg.batch_size` slots: a dialogue that ends gives its slot to the next one
    (continuous batching), the longest planned first (`cfg.order`). As the last dialogue of a shard
    ends, `on_shard(shard, turns frame, first, last, tokens, seconds)` gets it (seconds: since the
    stream began or the shard before was done); `on_dialogue(index)` as each dialogue ends.

    The one place dialogues are made, on this machine or on a Ray worker (`cluster.py`). A stream
    always starts at its first shard, so a rerun (resume) gives its shards the same batch company
    and writes the same bytes."""
    bounds = {s: (s * cfg.batch_size, min((s + 1) * cfg.batch_size, cfg.n) - 1) for s in shards}
    jobs = [plan(sc, cfg.seed, i, cfg.max_turns, cfg.lengths, cfg.assistant_lengths, cfg.opening) for s in shards for i in range(bounds[s][0], bounds[s][1] + 1)]
    if cfg.order == "longest" and len(jobs) > cfg.batch_size:  # a stream that refills: its short dialogues start last
        jobs = longest_first(jobs)
    ended: dict[int, dict[int, Any]] = {s: {} for s in shards}
    clock = [time.perf_counter()]

    def done(dialogue: Any) -> None:
        shard = dialogue.index // cfg.batch_size
        ended[shard][dialogue.index] = dialogue
        if on_dialogue:
            on_dialogue(dialogue.index)
        first, last = bounds[shard]
        if len(ended[shard]) == last - first + 1:
            dialogues = [ended[shard][i] for i in range(first, last + 1)]
            frame = dialogues_to_frame(dialogues, sc.profile.polars_schema())
            tokens = sum(t.n_tokens for d in dialogues for t in d.turns)
            now_ = time.perf_counter()
            on_shard(shard, frame, first, last, tokens, now_ - clock[0])
            clock[0] = now_

    simulate(jobs, sc, user_backend, assistant_backend, cfg.user, cfg.assistant, cfg.seed, cfg.max_turns, on_step,
             redraws=cfg.redraws, slots=cfg.batch_size, on_done=done, schedule=cfg.schedule, **redraw_guards(cfg, sc, user_backend, assistant_backend))


def _generate_shards(writer: RunWriter, cfg: GenerateConfig, sc: Scenario, assistant: Any, progress: bool,
                     prebuilt: dict[str | None, Backend]) -> float | None:
    """Simulate and write every shard the manifest does not list; the model's load time in
    seconds, or None when every shard was already written (nothing is loaded then). `prebuilt`
    holds backends `generate` already built (a server's, checked before the folder was made)."""
    from tqdm.auto import tqdm

    manifest = writer.manifest
    todo = [stream for stream in streams(cfg) if not set(stream) <= writer.done_shards]
    if not todo:
        for unused in prebuilt.values():
            unused.close()
        return None
    started = time.perf_counter()
    user_backend, assistant_backend, built = _backends(cfg, assistant, prebuilt)
    load_seconds = time.perf_counter() - started
    manifest["backend"] = {"user": user_backend.describe(), "assistant": assistant_backend.describe()}
    manifest["status"] = "running"
    writer.save()

    bar = tqdm(total=cfg.n, initial=manifest["progress"]["dialogues_done"], unit="dlg", desc=f"simgen {sc.name}",
               disable=not progress, dynamic_ncols=True)
    totals = {"lines": 0, "tokens": 0}
    t0 = time.perf_counter()

    def on_step(lines: int, tokens: int) -> None:
        totals["lines"] += lines
        totals["tokens"] += tokens
        elapsed = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(turns_s=f"{totals['lines'] / elapsed:.1f}", tok_s=f"{totals['tokens'] / elapsed:.0f}", refresh=False)
        bar.refresh()

    def write(shard: int, frame: Any, first: int, last: int, tokens: int, seconds: float) -> None:
        if shard not in writer.done_shards:  # a rerun stream's shards that were written before are not written again
            writer.write_shard(shard, frame, first, last, tokens, seconds)

    def ended(index: int) -> None:
        if index // cfg.batch_size not in writer.done_shards:
            bar.update(1)

    try:
        for stream in todo:
            simulate_stream(stream, cfg, sc, user_backend, assistant_backend, write, on_step, ended)
    finally:
        bar.close()
        for backend in built:
            backend.close()
    return load_seconds
