"""`simgen export hub`: a run as a Hugging Face dataset folder, and its upload.

    DIR/
      README.md                          dataset card: YAML metadata (license, task categories, size
                                         category, configs) and what the data is, how it was made
      recipe.json                        scenario, profile space, intent model and template texts with
                                         their sha256, model, seed, sampling, versions, splits and dedup
      data/dialogues/{split}-00000-of-00001-{tag}.parquet  one row per dialogue: messages, profile, intents
      data/turns/{split}-...parquet      one row per turn: turns.parquet's columns (+ consistency scores)
      data/profiles/{split}-...parquet   one row per dialogue: the profile latent, one column per variable
      reports/*.json                     copies of the JSON reports of every registered check (simgen.checks) the run has

`datasets.load_dataset(DIR)` loads the dialogues; `load_dataset(DIR, "turns")` or `"profiles"` the
others. Splits are by dialogue and the same in every config (see splits.py). When the run was scored
by `simgen consistency` (any check with a sidecar), user turns carry a `consistency` struct and dialogues
their mean scores.

`push` uploads the folder with huggingface_hub: a private dataset repo by default, the token from
the environment or the login cache (never printed), `upload_folder`, which with hf_xet (installed
with huggingface_hub) commits large folders in batches and resumes an interrupted upload when run
again. Offline or without a token it fails with a clear error before any request, and the local
folder is left as it is. The run is read lazily, EXPORT_CHUNK dialogues at a time; nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from simgen.checks import SIDECAR_KEYS, Check, registered
from simgen.errors import ConfigError, HubError
from simgen.export.card import config_entry, render_card, size_category, table
from simgen.export.output import check_target, staged, write_splits
from simgen.export.splits import SPLITS, Selection, SplitConfig, select
from simgen.files import atomic_write_json, now
from simgen.generation.run import Run, dialogue_spans, load_run, read_dialogues

CONFIGS = ("dialogues", "turns", "profiles")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def validate_repo_id(repo_id: str) -> str:
    """An `ORG/NAME` dataset repo id, or a `ConfigError` that shows the expected form."""
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    expected = "expected ORG/NAME (your user or organisation, a slash, the dataset name: letters, digits, '-', '_', '.'), e.g. my-org/movie-dialogues"
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ConfigError(f"--repo-id {repo_id!r}: malformed; {expected}.")
    try:
        hf_validate(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"--repo-id {repo_id!r}: malformed ({e}); {expected}.") from None
    return repo_id


def export_hub(run: Run | str | Path, to: str | Path, *, split: SplitConfig = SplitConfig(), overwrite: bool = False,
               repo_id: str | None = None, license: str | None = None) -> dict[str, Any]:
    """Write RUN as a dataset folder at `to` (see the module doc); return the export summary."""
    run = run if isinstance(run, Run) else load_run(run)
    to = Path(to)
    if repo_id is not None:
        validate_repo_id(repo_id)
    check_target(to, overwrite, run.path)
    selection = select(run.scan(), split)
    with staged(to, overwrite) as tmp:
        files = _write_configs(run, selection, tmp)
        reports = _copy_reports(run, tmp / "reports")
        recipe = build_recipe(run, selection)
        atomic_write_json(tmp / "recipe.json", recipe)
        summary = {"run": str(run.path), "to": str(to), "configs": files, "selection": selection.counts,
                   "reports": sorted(reports), "repo_id": repo_id}
        (tmp / "README.md").write_text(_card(run, selection, files, reports, recipe, repo_id, license, to), encoding="utf-8")
    return summary


EXPORT_CHUNK = 20_000  # dialogues read from the run at a time


def _write_configs(run: Run, selection: Selection, tmp: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Write the three configs' split shards into tmp/data, reading the run EXPORT_CHUNK dialogues at a time.

    Each chunk's rows of each config go to a part file; the parts are then cut into the split
    shards by streaming scans, so neither step holds more than a chunk of the run.
    """
    parts = tmp / ".parts"
    spans = dialogue_spans(run.scan())
    for k, start in enumerate(range(0, spans.height, EXPORT_CHUNK)):
        chunk = spans.slice(start, EXPORT_CHUNK)
        turns = _turns(run, read_dialogues(run.scan(), chunk).lazy(), selection, chunk["dialogue_id"]).collect()
        if turns.height == 0:  # every dialogue of the chunk was a duplicate
            continue
        frames = {"dialogues": _dialogues(run, turns.lazy(), chunk["dialogue_id"]), "turns": turns.lazy(), "profiles": _profiles(turns.lazy())}
        for name, frame in frames.items():
            (parts / name).mkdir(parents=True, exist_ok=True)
            frame.collect().write_parquet(parts / name / f"part-{k:05d}.parquet")
    files = {name: write_splits(pl.scan_parquet(sorted((parts / name).glob("*.parquet"))), tmp / "data" / name, SPLITS)
             for name in CONFIGS if (parts / name).is_dir()}
    shutil.rmtree(parts, ignore_errors=True)
    return files


def _sidecars(run: Run, ids: pl.Series) -> Iterator[tuple[type[Check], pl.LazyFrame]]:
    """(check, its sidecar rows of the dialogues `ids`) for every registered check whose sidecar the run has."""
    for check in registered():
        if check.sidecar and (run.path / check.sidecar).is_file():
            yield check, pl.scan_parquet(run.path / check.sidecar).filter(pl.col("dialogue_id").is_in(ids.implode()))


def _turns(run: Run, rows: pl.LazyFrame, selection: Selection, ids: pl.Series) -> pl.LazyFrame:
    """(kept dialogue, turn) -> turns.parquet's row + its split (+ a struct per check sidecar, e.g. `consistency`, on the rows it scored).

    `rows` are the run's rows of the dialogues `ids`."""
    turns = rows.join(selection.assignments.lazy(), on="dialogue_id", how="inner")
    for check, scores in _sidecars(run, ids):
        cols = [c for c in scores.collect_schema().names() if c not in SIDECAR_KEYS]
        turns = turns.join(scores.select(*SIDECAR_KEYS, pl.struct(cols).alias(check.name)), on=list(SIDECAR_KEYS), how="left")
    return turns.sort("dialogue_id", "turn")  # joins do not keep row order


def _dialogues(run: Run, turns: pl.LazyFrame, ids: pl.Series) -> pl.LazyFrame:
    """(dialogue) -> messages [{role, content}], profile, intents, n_turns, stop_reason, split (+ mean scores)."""
    out = turns.group_by("dialogue_id", maintain_order=True).agg(
        pl.struct(pl.col("role"), pl.col("text").alias("content")).alias("messages"),
        pl.col("profile").first(),
        pl.col("intent").drop_nulls().alias("intents"),
        pl.len().cast(pl.Int32).alias("n_turns"),
        pl.col("stop_reason").drop_nulls().first(),
        pl.col("split").first(),
    )
    for check, scores in _sidecars(run, ids):
        summary = check.summary(scores)
        if summary is not None:
            out = out.join(summary.select("dialogue_id", pl.struct(pl.exclude("dialogue_id")).alias(check.name)),
                           on="dialogue_id", how="left", maintain_order="left")
    return out


def _profiles(turns: pl.LazyFrame) -> pl.LazyFrame:
    """(dialogue) -> dialogue_id, one column per profile variable (and backstory), split."""
    return (turns.group_by("dialogue_id", maintain_order=True).agg(pl.col("profile").first(), pl.col("split").first())
            .unnest("profile"))


def _copy_reports(run: Run, folder: Path) -> dict[str, dict[str, Any]]:
    """Copy the JSON reports of every registered check that the run has; return check name -> the report."""
    out = {}
    for name in (r for check in registered() for r in check.reports if r.endswith(".json")):
        src = run.path / "reports" / name
        if src.is_file():
            try:
                out[name.removesuffix(".json")] = json.loads(src.read_text(encoding="utf-8"))
            except ValueError:
                continue  # a half-written or foreign file is not a report; it is left out, not copied
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / name)
    return out


def _file_record(path: str | None, recorded: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"path": path, "recorded_sha256": recorded}
    p = Path(path) if path else None
    if p is None or not p.is_file():
        return {**record, "found": False}
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    return {**record, "found": True, "sha256": sha, "matches_run": None if recorded is None else sha == recorded,
            "text": data.decode("utf-8", errors="replace")}


def build_recipe(run: Run, selection: Selection | None = None) -> dict[str, Any]:
    """What produced the run, from its manifest, with the scenario, intent model and template texts."""
    m = run.manifest
    sc = m.get("scenario") or {}
    recorded = sc.get("files")
    if not isinstance(recorded, dict):  # a run written before the scenario fingerprint: only the templates' hashes
        recorded = {"scenario": {"path": sc.get("path")}, **{f"{side}_template": t for side, t in (sc.get("templates") or {}).items()}}
        if sc.get("intent_model") and sc.get("intent_model") != sc.get("path"):
            recorded["intent_model"] = {"path": sc.get("intent_model")}
    # a profile variable's values read off a corpus (`values_NAME`) are no file to copy: recorded as they are
    corpus_values = {key[len("values_"):]: f for key, f in recorded.items() if key.startswith("values_") and isinstance(f, dict)}
    files = {key: _file_record(f.get("path"), f.get("sha256")) for key, f in recorded.items()
             if isinstance(f, dict) and not key.startswith("values_")}
    for side, t in (sc.get("templates") or {}).items():
        if f"{side}_template" in files:
            files[f"{side}_template"]["id"] = t.get("id")
    matches = [f.get("matches_run") for f in files.values()]
    scenario_ok = None if None in matches else all(matches)
    backend = m.get("backend") or {}
    return {
        "simgen_recipe": 1,
        "exported": now(),
        "run": {"path": str(run.path), "created": m.get("created"), "finished": m.get("finished"), "counts": m.get("counts")},
        "scenario": {"name": sc.get("name"), "fingerprint": sc.get("fingerprint"), "reference": sc.get("reference"),
                     "files_match_run": scenario_ok, "profile_values_from_corpora": corpus_values,
                     "note": "profile space and intent model are the scenario file's `profile:` and `intent_model:` (or the intent file)"},
        "files": files,
        "model": {"user": backend.get("user"), "assistant": backend.get("assistant")},
        "seed": m.get("seed"),
        "n": m.get("n"),
        "config": m.get("config"),
        "versions": m.get("versions"),
        "selection": selection.summary() if selection is not None else None,
    }


def _default_license(run: Run) -> str:
    from simgen.models import EMBEDDED_NAME

    model = ((run.manifest.get("backend") or {}).get("user") or {}).get("model") or {}
    return "apache-2.0" if model.get("id") == EMBEDDED_NAME else "other"  # SmolLM2 is Apache-2.0; other models: say so


def _fmt(stat: Any) -> str:
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "n/a"
    se = stat.get("se")
    return f"{stat['mean']:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def _card(run: Run, selection: Selection, files: dict[str, dict[str, dict[str, int]]], reports: dict[str, dict[str, Any]],
          recipe: dict[str, Any], repo_id: str | None, license: str | None, to: Path) -> str:
    m = run.manifest
    counts = selection.counts
    user_model = (recipe["model"]["user"] or {}).get("model") or {}
    configs = [config_entry(name, f"data/{name}", files[name], default=(name == "dialogues")) for name in CONFIGS]
    metadata = {
        "license": license or _default_license(run),
        "task_categories": ["text-generation"],
        "language": ["en"],
        "size_categories": [size_category(counts["kept"])],
        "tags": ["synthetic", "simgen", "user-simulation", "conversational", "multi-turn", m["scenario"]["name"]],
        "pretty_name": f"simgen {m['scenario']['name']} dialogues",
        "configs": configs,
    }
    where = repo_id or str(to)
    rows = [[name, ", ".join(f"{s}: {v['rows']}" for s, v in files[name].items()), what] for name, what in
            (("dialogues", "one dialogue: `messages` [{role, content}], `profile`, `intents`, `n_turns`, `stop_reason`"),
             ("turns", "one turn: `dialogue_id`, `turn`, `role`, `text`, `intent`, `n_tokens`, `finish_reason`, `stop_reason`, `profile`"),
             ("profiles", "one dialogue's profile latent, one column per variable, and `backstory`"))]
    body = [
        f"Synthetic multi-turn dialogues between a simulated user and an assistant, generated by "
        f"simgen {m.get('versions', {}).get('simgen', '')}: scenario `{m['scenario']['name']}`, "
        f"model `{user_model.get('id')}`, seed {m.get('seed')}. Each simulated user was conditioned on a sampled "
        "*profile latent* (who they are) and an *intent latent* per turn (what they want); both are in the data.",
        "```python\nfrom datasets import load_dataset\n"
        f"dialogues = load_dataset({where!r})            # config 'dialogues' (default)\n"
        f"turns = load_dataset({where!r}, 'turns')\n```",
        "## Configs\n\n" + table(rows, ["config", "rows per split", "one row is"]),
        "## Splits and duplicates\n\n"
        f"Split by dialogue (never by turn), by a hash of (seed {selection.config.seed}, dialogue id), fractions "
        f"{'/'.join(f'{f:g}' for f in selection.config.fractions)} (train/validation/test). "
        + (f"Before splitting, {counts['exact_duplicates']} exact and {counts['near_duplicates']} near-duplicate dialogues "
           f"(Jaccard of word 3-gram shingles >= {selection.config.near_dup_threshold:g}) were dropped: "
           f"{counts['kept']} of {counts['dialogues']} kept." if selection.config.dedup else
           f"Duplicates were not removed (`--no-dedup`): {counts['kept']} dialogues."),
        "## Recipe\n\n" + table([
            ["scenario", f"`{recipe['scenario']['name']}` fingerprint `{recipe['scenario']['fingerprint']}`"],
            *[[k, f"`{v.get('id') or Path(v['path'] or '').name}` sha256 `{v.get('sha256') or v.get('recorded_sha256')}`"]
              for k, v in recipe["files"].items() if k.endswith("_template")],
            ["model", f"`{user_model.get('id')}` (fingerprint `{user_model.get('fingerprint')}`, {(recipe['model']['user'] or {}).get('dtype')})"],
            ["seed", recipe["seed"]],
            ["sampling", json.dumps({k: (recipe['config'] or {}).get(k) for k in ('max_turns', 'user', 'assistant')})],
        ], ["what", "value"]) + "\n\n`recipe.json` holds the scenario, profile space, intent model and template texts, "
        "the full config and the package versions.",
    ]
    r = reports.get("realism") or {}
    if isinstance(r.get("auc"), (int, float)) and len(r.get("auc_ci") or []) == 2:
        lo, hi = r["auc_ci"]
        body.append("## Realism (`reports/realism.json`)\n\n"
                    f"Discriminator ROC-AUC synthetic vs `{(r.get('reference') or {}).get('name', 'reference')}`: "
                    f"{r['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}); 0.5 = indistinguishable, 1 = always told apart. "
                    f"Verdict: {r.get('verdict')}.")
    if "consistency" in reports:
        c = reports["consistency"]
        o = c.get("overall") or {}
        judge = c.get("judge") or {}
        body.append("## Persona consistency (`reports/consistency.json`)\n\n"
                    f"Judge: `{judge.get('judge')}` {judge.get('model', '')}.\n\n"
                    + table([[k, _fmt(o.get(k))] for k in ("prompt_to_line", "line_to_line", "qa", "specificity")],
                            ["score (mean over dialogues ± se)", "value"])
                    + "\n\nRead consistency beside specificity: a persona that says nothing is never contradicted.")
    h = reports.get("human") or {}
    pooled = h.get("pooled") or {}
    if isinstance(pooled.get("auc"), (int, float)):
        lo, hi = pooled.get("auc_ci") or (float("nan"), float("nan"))
        machine = h.get("machine") or {}
        body.append("## Human realism (`reports/human.json`)\n\n"
                    f"People telling these dialogues from real ones (`simgen rate`): ROC-AUC {pooled['auc']:.3f} "
                    f"(95% CI {lo:.3f}-{hi:.3f}), accuracy {pooled.get('accuracy')}, {pooled.get('answers')} answers "
                    f"by {len(h.get('raters') or {})} raters. Verdict: {h.get('verdict')}."
                    + (f" simgen's discriminators on the same dialogues: AUC {machine['auc']:.3f}." if isinstance(machine.get("auc"), (int, float)) else ""))
    body.append("## Limitations\n\nThe dialogues are machine-generated: the users are simulated and their profiles sampled, "
                "not real people. They can be repetitive or off-persona; check the realism and consistency numbers above "
                "(when present) before training on them.")
    return render_card(metadata, f"simgen: {m['scenario']['name']} dialogues", "\n\n".join(body))


def push(folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Upload an exported folder to the dataset repo `repo_id`; return its URL.

    The token comes from `token`, else `HF_TOKEN` or the login cache (`hf auth login`). The repo is
    created private unless `private=False`; an existing repo keeps its visibility. Run it again to
    resume an interrupted upload (hf_xet skips what is already there). The folder is never changed.
    """
    import huggingface_hub as hf
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    repo_id = validate_repo_id(repo_id)
    keep = f"The local folder {folder} is intact; push it later from Python: `simgen.export.push({str(folder)!r}, {repo_id!r})`."
    if not (folder / "README.md").is_file():
        raise HubError(f"{folder}: not an exported dataset folder (no README.md); export it first with `simgen export hub`.")
    if constants.is_offline_mode():
        raise HubError(f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). Unset it and check the network. {keep}")
    token = token or hf.get_token()
    if not token:
        raise HubError(f"cannot push to {repo_id}: no Hugging Face token. Set HF_TOKEN or run `hf auth login`. {keep}")

    def clean(e: BaseException) -> str:
        return str(e).replace(token, "***").splitlines()[0] if str(e) else type(e).__name__

    import httpx2

    api = hf.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder,
                          commit_message=f"simgen export ({now()})")
    except OfflineModeIsEnabled:
        raise HubError(f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). {keep}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        hint = {401: "the token is invalid or expired", 403: "the token cannot write to that namespace",
                404: "no such namespace"}.get(status, "the Hub refused the request")
        raise HubError(f"cannot push to {repo_id}: HTTP {status}, {hint} ({clean(e)}). {keep}") from None
    except ValueError as e:  # the Hub's check of the card's YAML metadata
        raise HubError(f"cannot push to {repo_id}: the Hub rejected README.md's metadata ({clean(e)}). {keep}") from None
    except (httpx2.HTTPError, OSError) as e:
        raise HubError(f"cannot push to {repo_id}: the Hub is unreachable ({type(e).__name__}: {clean(e)}). "
                       f"Check the network and run the push again. {keep}") from None
    return str(url)
