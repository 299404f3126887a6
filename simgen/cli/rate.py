"""`simgen rate`: a blind human realism test of a run, on a local web page; `--report` for the results."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("rate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--reference", "-r", default=None,
              help="Real dialogues to mix in: a corpus file, a folder of them or a registered name (chitchat). "
                   "Needed to start a rating; a restart reuses the saved one.")
@click.option("--reference-split", type=click.Choice(["train", "validation", "test", "all"]), default=None,
              help="Which split of the reference to draw from [default: test, the held-out split no fitting or tuning reads].")
@click.option("--n", "n", type=int, default=None, help="Dialogues each rater sees, half simulated and half real [default: 40].")
@click.option("--seed", type=int, default=None, help="Seed of the sample and of each rater's order [default: 0].")
@click.option("--max-user-turns", type=int, default=None,
              help="Cut every shown dialogue after this many user turns [default: the smaller of the two sides' 75th percentiles].")
@click.option("--raters", default="", help="Comma-separated rater names (the start page lists them); default: anyone types a name.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but 127.0.0.1/localhost lets other machines in: there are no accounts.")
@click.option("--report", "report_only", is_flag=True,
              help="Write RUN/reports/human.json and human.html from the answers so far, print the results, and exit.")
@click.option("--machine/--no-machine", default=True, show_default=True,
              help="Score the same dialogues with simgen's realism discriminators, to show beside people.")
@click.option("--discriminators", "-d", default="tfidf,embedding,style", show_default=True,
              help="Discriminators for the machine scores (the realism check's).")
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap resamples per interval.")
def rate(run: Path, reference: str | None, reference_split: str | None, n: int | None, seed: int | None,
         max_user_turns: int | None, raters: str, port: int, host: str, report_only: bool, machine: bool,
         discriminators: str, n_boot: int) -> None:
    """Let people tell RUN's simulated dialogues from real ones, one dialogue at a time, blind.

    Starts a local web page and prints its address. Each rater sees the same dialogues (half from
    RUN, half from --reference) in an order of their own, answers "real person" or "simulated"
    and how sure (1-4), by mouse or keys (Left/Right, then 1-4). Answers are saved as they are
    given (RUN/rating/answers.jsonl): stop the server or close the page at any time, and the
    next start resumes where each rater stopped. For trusted local use: raters are names, not
    accounts.

    \b
    Examples:
      simgen rate outputs/demo -r ../shared/data/iard --raters alice,bob
      simgen rate outputs/demo                 # resume the saved rating
      simgen rate outputs/demo --report        # RUN/reports/human.json and .html
    """
    from simgen.errors import ConfigError
    from simgen.rating.server import NAME, NAME_HELP

    names = tuple(r.strip() for r in raters.split(",") if r.strip())
    for name in names:
        if not NAME.match(name):
            raise click.BadParameter(f"{name!r}: a rater name is {NAME_HELP}.", param_hint="--raters")
    dnames = tuple(d.strip() for d in discriminators.split(",") if d.strip())
    from simgen.realism.config import DISCRIMINATORS

    bad = [d for d in dnames if d not in DISCRIMINATORS]
    if bad or not dnames:
        raise ConfigError(f"--discriminators {discriminators!r}: choose from {', '.join(DISCRIMINATORS)}.")
    if report_only:
        _report(run, machine, dnames, n_boot)
        return
    if not 1 <= port <= 65535:
        raise click.BadParameter(f"{port} is not a TCP port (1-65535).", param_hint="--port")
    from simgen.rating.answers import Answers
    from simgen.rating.items import prepare_items
    from simgen.rating.server import Machine, check_port, make_app, serve

    check_port(host, port)  # before anything is written
    items = prepare_items(run, reference=reference, reference_split=reference_split, n=n, seed=seed,
                          max_user_turns=max_user_turns)
    answers = Answers(items)
    scorer = None
    if machine:
        from simgen.rating.report import machine_scores

        def scorer() -> dict:
            return machine_scores(items, run, discriminators=dnames, n_boot=n_boot)

    app = make_app(items, answers, raters=names, machine=Machine(scorer), n_boot=n_boot)
    s = items.settings
    cut = items.cut_summary()
    click.echo(f"rating {len(items.items)} dialogues of {run} ({cut['synthetic_items']} simulated, {cut['real_items']} real from "
               f"{s['reference']}, split {s['reference_split']}), cut to {items.max_user_turns} user turns "
               f"({cut['synthetic_cut']} simulated and {cut['real_cut']} real were longer)")
    done = answers.answered()
    if done:
        click.echo("answers so far: " + ", ".join(f"{r} {k}/{len(items.items)}" for r, k in done.items()))
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can open the page and answer "
                   "under any name. Use it only on a network you trust.", err=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "localhost") else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    click.echo(f"open {url}" + "".join(f"\n  {name}: {url}rate/{name}" for name in names))
    click.echo("answers go to " + str(items.answers_path) + "; Ctrl-C stops the server (nothing is lost); "
               f"`simgen rate {run} --report` writes the report.", err=False)
    serve(app, host, port)


def _report(run: Path, machine: bool, discriminators: tuple[str, ...], n_boot: int) -> None:
    from simgen.generation.run import load_run
    from simgen.rating.check import HumanCheck

    r = HumanCheck().run(load_run(run), machine=machine, discriminators=discriminators, n_boot=n_boot)

    def f(x: float | None, ci: list | None = None) -> str:
        return "-" if x is None else f"{x:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "")

    p = r["pooled"]
    click.echo(f"people: AUC {f(p['auc'], p['auc_ci'])}, accuracy {f(p['accuracy'], p['accuracy_ci'])} "
               f"({p['answers']} answers on {r['items']['n']} dialogues): {r['verdict']}")
    for name, x in r["raters"].items():
        click.echo(f"  {name:<12} {x['answers']:>4} answers  accuracy {f(x['accuracy'], x['accuracy_ci'])}  AUC {f(x['auc'], x['auc_ci'])}")
    fl = r["agreement"]["fleiss"]
    if fl["items"]:
        click.echo(f"agreement: Fleiss' kappa {f(fl['kappa'])} over {fl['items']} dialogues answered twice or more")
    m = r["machine"]
    if m:
        click.echo(f"simgen's discriminators on the same dialogues: AUC {f(m['auc'], m['auc_ci'])}; rank correlation "
                   f"with people {f(m['rank_correlation_with_people'])}")
    click.echo(f"wrote {r['paths']['json']} and {r['paths']['html']}")
