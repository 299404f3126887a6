"""`simgen realism`: compare synthetic dialogues with a real reference corpus."""

from __future__ import annotations

import json
from pathlib import Path

import click

from simgen.cli import ray_config, ray_options


@click.command("realism")
@click.argument("synthetic")
@click.option("--reference", "-r", default="chitchat", show_default=True,
              help="Reference corpus: a registered name (chitchat), a .jsonl/.json/.parquet file, a folder of them, or a run folder.")
@click.option("--reference-split", type=click.Choice(["train", "validation", "test"]), default=None,
              help="Compare with one split of the reference only (by a hash of the dialogue id): `test` is the held-out split "
                   "no fitting, exemplar or tuning reads. Default: all of it.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.json and report.html [default: SYNTHETIC/reports/realism.* for a run folder].")
@click.option("--seed", default=0, show_default=True, help="Seed for folds, bootstraps and clustering.")
@click.option("--discriminators", "-d", default="tfidf,embedding,style", show_default=True,
              help="Comma-separated discriminators to train.")
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap resamples per interval.")
@click.option("--n-perm", default=1000, show_default=True, help="Permutations per distribution-matching p-value.")
@click.option("--max-dialogues", default=0, show_default=True,
              help="Subsample each side to this many dialogues (seeded; 0 = all). A run is read lazily: only the sample is loaded.")
@click.option("--no-attributes", is_flag=True, help="Skip classifier-ensemble distribution matching.")
@click.option("--no-embeddings", is_flag=True,
              help="Skip sentence embeddings (faster; TF-IDF stands in for them). Drop 'embedding' from -d too.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON on stdout.")
@ray_options
def realism(synthetic: str, reference: str, reference_split: str | None, out: Path | None, seed: int, discriminators: str, n_boot: int, n_perm: int,
            max_dialogues: int, no_attributes: bool, no_embeddings: bool, as_json: bool, ray_address: str | None, ray_workers: int,
            ray_cpus: float, ray_gpus: float, ray_retries: int) -> None:
    """Can discriminators tell SYNTHETIC dialogues from real ones, and do the distributions match?

    SYNTHETIC is a run folder or a corpus file (one row per turn: dialogue_id, turn, role, text,
    optional intent), so two real corpora can be compared too.

    \b
    Examples:
      simgen realism outputs/demo                         # vs chitchat, report in outputs/demo/reports/
      simgen realism outputs/demo -r iard.json --out rep  # rep/report.json + rep/report.html
      simgen realism outputs/demo -r ../shared/data/iard --reference-split test
      simgen realism /shared/runs/big --ray auto          # sentence embeddings on a Ray cluster
    """
    from simgen.realism.config import RealismConfig
    from simgen.realism.report import compare

    names = tuple(d.strip() for d in discriminators.split(",") if d.strip())
    if no_embeddings:
        names = tuple(d for d in names if d != "embedding")
    config = RealismConfig(
        seed=seed, discriminators=names, use_embeddings=not no_embeddings,
        n_boot=n_boot, n_perm=n_perm, max_dialogues=max_dialogues, attributes=not no_attributes,
    )
    if reference_split:
        from simgen.corpora import load_corpus

        reference = load_corpus(reference, split=reference_split)
    report = compare(synthetic, reference, out, config=config, ray=ray_config(ray_address, ray_workers, ray_cpus, ray_gpus, ray_retries))
    if as_json:
        click.echo(json.dumps({k: v for k, v in report.items()}, indent=2, default=str))
        return
    click.echo(f"realism: AUC {report['auc']:.3f} (95% CI {report['auc_ci'][0]:.3f}-{report['auc_ci'][1]:.3f}): {report['verdict']}")
    n = report["n"]
    if report.get("intent_adherence"):
        a = report["intent_adherence"]
        click.echo(f"intent adherence: accuracy {a['synthetic']['accuracy']:.3f} against a ceiling of {a['ceiling']['accuracy']:.3f} "
                   f"(real lines, cross-validated): {a['ratio']['accuracy']:.0%} of it")
    shape = report["shape"]
    click.echo(f"words per user line: median {shape['words_per_user_line']['synthetic'].get('median')} vs "
               f"{shape['words_per_user_line']['reference'].get('median')} real (JSD {shape['words_per_user_line']['jsd']:.3f}); "
               f"user lines per dialogue JSD {shape['user_lines_per_dialogue']['jsd']:.3f}")
    spread = {name: h["spread_ratio"] for name, h in shape.get("habits_per_dialogue", {}).items()}
    if spread:  # None: the reference does not vary in that habit, so there is no spread to compare against
        click.echo("habits per dialogue, spread against real (synthetic SD / real SD; under 1: users more alike than people): "
                   + ", ".join(f"{name} {'n/a' if r is None else f'{r:.2f}'}" for name, r in spread.items()))
    click.echo(f"  n: synthetic {n['synthetic']['dialogues']} dialogues / {n['synthetic']['user_turns']} user turns, "
               f"reference {n['reference']['dialogues']} / {n['reference']['user_turns']}")
    for name, d in report["discriminators"].items():
        dl = d.get("dialogue")
        if dl:
            click.echo(f"  {name:<10} dialogue AUC {dl['auc']:.3f} [{dl['ci'][0]:.3f}, {dl['ci'][1]:.3f}]"
                       + (f"  user-turn {d['user_turn']['auc']:.3f}" if "user_turn" in d else ""))
    for name, a in report["attributes"].items():
        j = a["jsd"]
        click.echo(f"  {name:<16} JSD {j['value_bc']:.4f} [{j['ci'][0]:.4f}, {j['ci'][1]:.4f}] p={j['p_value']:.3f}")
    if report.get("mauve"):
        click.echo(f"  MAUVE-style {report['mauve']['mauve']:.3f} ± {report['mauve']['std']:.3f}")
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if "paths" in report:
        click.echo(f"wrote {report['paths']['json']} and {report['paths']['html']}")
    else:
        click.echo("no files written: pass --out DIR for report.json and report.html")
