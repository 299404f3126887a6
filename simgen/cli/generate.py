"""`simgen generate`: write a run folder of simulated dialogues."""

from __future__ import annotations

from pathlib import Path

import click

from simgen.config import GenerateConfig, SamplingConfig


@click.command()
@click.option("--scenario", "-s", default="movie-recommendation", show_default=True, help="Shipped scenario name, or the path of your own scenario YAML.")
@click.option("-n", "n", type=int, default=20, show_default=True, help="Number of dialogues.")
@click.option("--seed", type=int, default=0, show_default=True, help="Dialogue i is determined by (seed, i).")
@click.option("--model", "-m", default=None, help="Local HF model folder or an id in the local HF cache. Default: the embedded SmolLM2-135M-Instruct.")
@click.option("--assistant-model", default=None, help="A different model for the assistant side (default: --model).")
@click.option("--assistant", "assistant_spec", default=None, help="Your own assistant: MODULE:FUNCTION or FILE.py:FUNCTION taking messages, returning a str.")
@click.option("--max-turns", type=int, default=6, show_default=True, help="User turns per dialogue at most.")
@click.option("--batch-size", "-b", type=int, default=16, show_default=True, help="Dialogues advanced together in one batched forward pass.")
@click.option("--temperature", "-t", type=float, default=None, help="Both sides' temperature (0 = greedy). Default: user 0.8, assistant 0.7.")
@click.option("--repetition-penalty", type=float, default=None, help="Both sides' HF-style repetition penalty (default 1.15; 1 = off).")
@click.option("--top-p", type=float, default=None, help="Both sides' nucleus mass (default 0.95).")
@click.option("--user-max-new-tokens", type=int, default=48, show_default=True, help="Tokens per user line at most.")
@click.option("--assistant-max-new-tokens", type=int, default=96, show_default=True, help="Tokens per assistant line at most.")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float32"]), default="auto", show_default=True, help="auto = bf16 where the CPU supports it.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Run folder (default: outputs/<scenario>-n<N>-seed<SEED>).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Finish an interrupted run folder with its recorded settings.")
@click.option("--persona-cap", default=None, help="LAYER:THRESHOLD: cap the user side's projection on the persona axis (needs --persona-axis).")
@click.option("--persona-axis", default=None, type=click.Path(), help="persona_axis.json from `simgen consistency RUN` (RUN/reports/persona_axis.json).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model folders that ship their own Python code.")
@click.option("--backend", type=click.Choice(["transformers", "openai"]), default="transformers", show_default=True,
              help="transformers: the model in this process. openai: an OpenAI-compatible server (vLLM, llama.cpp, TGI, Ollama).")
@click.option("--base-url", default=None, help="With --backend openai: the server's URL, ending in /v1.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="With --backend openai: the environment variable holding the API key (the key is never logged).")
@click.option("--concurrency", type=int, default=16, show_default=True, help="With --backend openai: requests in flight at most.")
@click.option("--request-timeout", type=float, default=120.0, show_default=True, help="With --backend openai: seconds per answer before a retry.")
@click.option("--max-retries", type=int, default=4, show_default=True, help="With --backend openai: retries per request (429, 5xx, timeouts, dropped connections).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def generate(scenario, n, seed, model, assistant_model, assistant_spec, max_turns, batch_size, temperature, top_p,
             repetition_penalty, user_max_new_tokens, assistant_max_new_tokens, dtype, out, resume, persona_cap, persona_axis, trust_remote_code,
             backend, base_url, api_key_env, concurrency, request_timeout, max_retries, quiet) -> None:  # noqa: ANN001
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
    """
    from simgen.generation import pipeline as gen

    assistant = None
    if assistant_spec:
        from simgen.backends.callable import load_callable

        assistant = load_callable(assistant_spec)
    if resume is not None:
        run = gen.resume(resume, assistant=assistant, progress=not quiet)
    else:
        defaults = GenerateConfig()
        user = SamplingConfig(
            temperature=defaults.user.temperature if temperature is None else temperature,
            top_p=defaults.user.top_p if top_p is None else top_p,
            max_new_tokens=user_max_new_tokens,
            repetition_penalty=defaults.user.repetition_penalty if repetition_penalty is None else repetition_penalty,
        )
        assistant_sampling = SamplingConfig(
            temperature=defaults.assistant.temperature if temperature is None else temperature,
            top_p=defaults.assistant.top_p if top_p is None else top_p,
            max_new_tokens=assistant_max_new_tokens,
            repetition_penalty=defaults.assistant.repetition_penalty if repetition_penalty is None else repetition_penalty,
        )
        config = GenerateConfig(scenario=scenario, n=n, seed=seed, model=model, assistant_model=assistant_model,
                                max_turns=max_turns, batch_size=batch_size, dtype=dtype, user=user,
                                assistant=assistant_sampling, trust_remote_code=trust_remote_code,
                                persona_cap=persona_cap, persona_axis=str(persona_axis) if persona_axis else None,
                                backend=backend, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                                request_timeout=request_timeout, max_retries=max_retries)
        run = gen.generate(config=config, out=out, assistant=assistant, progress=not quiet)
    counts, timings = run.manifest["counts"], run.manifest["timings"]
    click.echo(
        f"wrote {counts['dialogues']} dialogues ({counts['turns']} turns, {counts['tokens']} tokens) to {run.path}\n"
        f"  {timings.get('dialogues_per_min')} dialogues/min, {timings.get('tokens_per_s')} tokens/s; "
        f"stop reasons: {counts['stop_reasons']}\n"
        f"  look at them: simgen show {run.path}"
    )
