"""`simgen generate`: write a run folder of simulated dialogues.

Its flags are made from `GenerateConfig`'s fields and those of its nested per-backend configs (name,
default, `help`, `choices`, `flag`), and the sampling flags from `SamplingConfig`'s, so a setting is
declared once, in simgen/config.py.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import MISSING, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import click

from simgen.config import TUNED_TEMPERATURE, UNTUNED_TEMPERATURE, GenerateConfig, SamplingConfig
from simgen.cli import ray_config, ray_options

SAMPLING = ("user", "assistant")  # GenerateConfig fields that are SamplingConfigs: flags below
TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def config_options(cls: type, prefix: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """click options for `cls`'s scalar fields (`--max-turns` for `max_turns`, `-n` for `n`), and for
    the fields of its nested configs (`--base-url` for `server.base_url`, passed as `server__base_url`)."""
    hints = typing.get_type_hints(cls)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(fields(cls)):
            hint = hints[f.name]
            if f.name in SAMPLING and not prefix:
                continue
            if is_dataclass(hint):
                command = config_options(hint, f"{prefix}{f.name}__")(command)
                continue
            meta = f.metadata
            base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
            long = f"--{f.name.replace('_', '-')}"
            flags = [f"-{f.name}"] if len(f.name) == 1 else [meta["flag"]] if str(meta.get("flag", "")).startswith("--") else [long, *([meta["flag"]] if "flag" in meta else [])]
            kwargs: dict[str, Any] = {"help": meta.get("help"), "default": f.default if f.default is not MISSING else None}
            if base is bool:
                kwargs["is_flag"] = True
            else:
                choices = meta.get("choices")
                if choices == "backends":
                    from simgen.backends import REGISTRY

                    choices = sorted(REGISTRY)
                kwargs["type"] = click.Choice(list(choices)) if choices else base
                kwargs["show_default"] = f.default is not None
            command = click.option(*flags, f"{prefix}{f.name}", **kwargs)(command)
        return command

    return decorate


def nest(settings: dict[str, Any]) -> dict[str, Any]:
    """`{"server__base_url": v, "n": 3}` -> `{"server": ServerConfig(base_url=v), "n": 3}`, each nested config built by its class."""
    hints = typing.get_type_hints(GenerateConfig)
    out: dict[str, Any] = {}
    for key, value in settings.items():
        outer, sep, inner = key.partition("__")
        if sep:
            out.setdefault(outer, {})[inner] = value
        else:
            out[key] = value
    return {k: hints[k](**v) if isinstance(v, dict) else v for k, v in out.items()}


def sampling_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Both sides' temperature, top-p, min-p, repetition penalty, end nudge, length floor, context, trimming and length holds, and each side's max new tokens."""
    defaults, help_of = GenerateConfig(), {f.name: f.metadata["help"] for f in fields(SamplingConfig)}
    for side in reversed(SAMPLING):
        command = click.option(f"--{side}-max-new-tokens", type=int, default=getattr(defaults, side).max_new_tokens, show_default=True,
                               help=f"{side.capitalize()} side: {help_of['max_new_tokens']}.")(command)
    command = click.option("--context", "context", type=int, default=None,
                           help=f"Both sides: {help_of['context']}.")(command)
    command = click.option("--length-floor", "length_floor", type=float, default=None,
                           help=f"Both sides: {help_of['length_floor']}. Default: 0 (off).")(command)
    command = click.option("--end-nudge", "end_nudge", type=float, default=None,
                           help=f"Both sides: {help_of['end_nudge']}. Default: 0 (off).")(command)
    for name, flags in (("repetition_penalty", ("--repetition-penalty",)), ("min_p", ("--min-p",)), ("top_p", ("--top-p",)),
                        ("temperature", ("--temperature", "-t"))):
        per_side = ", ".join(f"{side} {getattr(getattr(defaults, side), name)}" for side in SAMPLING)
        if name == "temperature":
            per_side = (f"{TUNED_TEMPERATURE:g} for a side a `simgen tune` simulator writes, else "
                        + ", ".join(f"{side} {UNTUNED_TEMPERATURE[side]}" for side in SAMPLING))
        text = f"Both sides' {help_of[name]}." + ("" if name == "repetition_penalty" else f" Default: {per_side}.")
        command = click.option(*flags, name, type=float, default=None, help=text)(command)
    for name in ("reach_target", "trim"):
        per_side = ", ".join(f"{side} {'on' if getattr(getattr(defaults, side), name) else 'off'}" for side in SAMPLING)
        flag = name.replace("_", "-")
        command = click.option(f"--{flag}/--no-{flag}", name, default=None, help=f"Both sides: {help_of[name]}. Default: {per_side}.")(command)
    return command


@click.command()
@config_options(GenerateConfig)
@sampling_options
@click.option("--assistant", "assistant_spec", default=None, help="Your own assistant: MODULE:FUNCTION or FILE.py:FUNCTION taking messages, returning a str.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Run folder (default: outputs/<scenario>-n<N>-seed<SEED>).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Finish an interrupted run folder with its recorded settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@ray_options
def generate(assistant_spec: str | None, out: Path | None, resume: Path | None, quiet: bool, temperature: float | None,
             top_p: float | None, min_p: float | None, repetition_penalty: float | None, trim: bool | None, reach_target: bool | None, end_nudge: float | None,
             length_floor: float | None, context: int | None,
             user_max_new_tokens: int,
             assistant_max_new_tokens: int, ray_address: str | None, ray_workers: int, ray_cpus: float, ray_gpus: float,
             ray_retries: int, **settings: Any) -> None:
    """Generate multi-turn dialogues between a simulated user and an assistant.

    Each dialogue gets a profile latent (who the user is) and an intent latent per user turn
    (what they want); both are recorded in RUN/turns.parquet beside the text.

    \b
    Examples:
      simgen generate -n 20 --out outputs/demo
      simgen generate --scenario chitchat -n 200 --seed 7 --batch-size 32
      simgen generate --scenario my_scenario.yaml --model ~/models/Qwen2.5-0.5B-Instruct
      simgen generate --assistant mybot.py:reply -n 50      # test your own assistant
      simgen generate --backend openai --base-url http://127.0.0.1:8080/v1 --model smollm2 -n 1000
      simgen generate --resume outputs/demo                 # finish an interrupted run
      simgen generate -n 100000 --ray auto --ray-workers 16 --out /shared/runs/big   # on a Ray cluster
    """
    from simgen.generation import pipeline as gen

    ray = ray_config(ray_address, ray_workers, ray_cpus, ray_gpus, ray_retries)

    assistant = None
    if assistant_spec:
        from simgen.backends.callable import load_callable

        assistant = load_callable(assistant_spec)
    if resume is not None:
        run = gen.resume(resume, assistant=assistant, progress=not quiet, ray=ray)
    else:
        shared = {k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("min_p", min_p), ("repetition_penalty", repetition_penalty),
                                    ("trim", trim), ("reach_target", reach_target), ("end_nudge", end_nudge),
                                    ("length_floor", length_floor), ("context", context)) if v is not None}
        defaults = GenerateConfig()
        config = GenerateConfig(**nest(settings),
                                user=replace(defaults.user, **shared, max_new_tokens=user_max_new_tokens),
                                assistant=replace(defaults.assistant, **shared, max_new_tokens=assistant_max_new_tokens))
        run = gen.generate(config=config, out=out, assistant=assistant, progress=not quiet, ray=ray)
    counts, timings = run.manifest["counts"], run.manifest["timings"]
    click.echo(
        f"wrote {counts['dialogues']} dialogues ({counts['turns']} turns, {counts['tokens']} tokens) to {run.path}\n"
        f"  {timings.get('dialogues_per_min')} dialogues/min, {timings.get('tokens_per_s')} tokens/s; "
        f"stop reasons: {counts['stop_reasons']}\n"
        f"  look at them: simgen show {run.path}"
    )
