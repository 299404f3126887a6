"""`simgen profiles sample` and `simgen scenarios`: look at latents before generating anything."""

from __future__ import annotations

import click


@click.group()
def profiles() -> None:
    """Inspect profile spaces (the session-level latents of a scenario)."""


@profiles.command("sample")
@click.argument("scenario")
@click.option("-n", "n", type=int, default=5, show_default=True, help="How many profiles.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed as `generate`, same profiles.")
@click.option("--backstory/--no-backstory", default=False, help="Also print each rendered backstory.")
@click.option("--intents", "show_intents", is_flag=True, help="Also sample each profile's intent path, and who says the first line.")
@click.option("--max-turns", type=int, default=None, help="Length cap of the intent paths (default: the scenario's, as `generate`).")
def sample(scenario: str, n: int, seed: int, backstory: bool, show_intents: bool, max_turns: int | None) -> None:
    """Print N sampled profile latents of SCENARIO as a table.

    Profile i here is exactly the profile of dialogue i in `simgen generate --seed SEED`.

    \b
    Examples:
      simgen profiles sample movie-recommendation -n 5
      simgen profiles sample my_scenario.yaml -n 10 --seed 3 --backstory --intents
    """
    import polars as pl

    from simgen.errors import ConfigError
    from simgen.scenario import load_scenario
    from simgen.generation.plan import plan

    if n <= 0:
        raise ConfigError(f"-n must be > 0, got {n}.")
    sc = load_scenario(scenario)
    jobs = [plan(sc, seed, i, max_turns or sc.max_turns) for i in range(n)]
    rows = []
    for job in jobs:
        row = {"#": job.index}
        for key, value in job.profile.values.items():
            if key == "backstory":
                continue
            row[key] = ", ".join(map(str, value)) if isinstance(value, list) else value
        if show_intents:
            row["first"] = "assistant" if job.opens else "user"  # who opens the dialogue (the length model's `first_word`)
            row["intents"] = " > ".join(job.intents)
        rows.append(row)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, tbl_width_chars=240):
        click.echo(pl.DataFrame(rows))
    if backstory:
        for job in jobs:
            click.echo(f"\n#{job.index}: {job.profile.backstory}")


@click.command()
def scenarios() -> None:
    """List the shipped scenarios: name, variables, intents, reference corpus."""
    from simgen.scenario import list_scenarios, load_scenario

    for name in list_scenarios():
        sc = load_scenario(name)
        click.echo(f"{name}  ({sc.path})")
        click.echo(f"  {sc.description}")
        click.echo(f"  profile: {', '.join(sc.profile.names)}")
        click.echo(f"  intents: {', '.join(i.name + ('*' if i.terminal else '') for i in sc.intents.intents)}  (* terminal)")
        click.echo(f"  reference corpus: {sc.reference}\n")
