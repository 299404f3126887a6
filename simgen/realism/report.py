"""`compare`: run the realism check end to end and build its report.

Steps: read both corpora (`simgen.corpora`), check they are usable, optionally subsample, embed
every turn (cached per corpus), train the discriminators with grouped CV and stack them, match
attribute distributions, pick giveaways and examples, state n and warnings, and write
`report.json` + `report.html`.

Where reports go: `out=DIR` -> DIR/report.json and DIR/report.html; with no `out`, a run folder
gets RUN/reports/realism.json and RUN/reports/realism.html, and any other input writes nothing
(the dict is still returned). The turns are never rewritten.

Report shape (top level): `auc` and `auc_ci` (the ensemble discriminator, dialogue level),
`discriminators` (one entry per discriminator, per level, plus `ensemble`), `attributes` (one entry
per attribute with `jsd` and `tv`: value, bias-corrected value, CI, p-value), `mauve`, `shape` (user
lines per dialogue, words per user line, closing endings, midway goodbyes: adherence.py), `intent_adherence` (null
when the sides share no labelled intent; a reference without act labels is labelled by the run's
scenario's `label_rules`), `giveaways`, `examples`, `histograms`, `n`, `warnings`,
`config`, `timing_s`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from simgen.corpora import LABEL_COLUMNS, Corpus, load_corpus
from simgen.errors import DataError
from simgen.realism.config import RealismConfig
from simgen.realism.embed import model_tag
from simgen.realism.features import Units, build_units

if TYPE_CHECKING:
    from simgen.intents import IntentModel

REPORT_VERSION = 1
READ_COLUMNS = LABEL_COLUMNS  # besides the required dialogue_id, turn, role, text


def compare(
    synthetic: str | Path | pl.DataFrame | Corpus,
    reference: str | Path | pl.DataFrame | Corpus = "chitchat",
    out: str | Path | None = None,
    *,
    config: RealismConfig | None = None,
    ray: Any = None,
) -> dict[str, Any]:
    """Compare a synthetic corpus with a reference corpus; return the report dict (and write it).

    synthetic, reference: a run folder, a corpus file, a registered corpus name or a turns frame.
    out: a folder for report.json + report.html (see the module doc for the default).
    ray: a `simgen.cluster.RayConfig`: the sentence embeddings are computed on a Ray cluster (`cluster.py`).
    """
    cfg = config or RealismConfig()
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    # runs and parquet files are read lazily: only these columns of the sampled dialogues are loaded
    how = {"max_dialogues": cfg.max_dialogues, "seed": cfg.seed, "columns": READ_COLUMNS}
    syn = load_corpus(synthetic, name=None if not isinstance(synthetic, pl.DataFrame) else "synthetic", **how)
    ref = load_corpus(reference, name=None if not isinstance(reference, pl.DataFrame) else "reference", **how)
    for label, c in (("synthetic", syn), ("reference", ref)):
        n_user = c.turns.filter(pl.col("role") == "user").height
        if n_user == 0:
            roles = sorted(set(c.turns["role"].to_list()))
            raise DataError(
                f"the {label} corpus {c.source!r} has no user turns (roles found: {roles}); realism compares "
                "user turns, so both sides need some. Check the role column."
            )
    intents = _intent_model(syn)
    if intents is not None and intents.label_rules:  # a reference without act labels gets the run's scenario's
        ref = dataclasses.replace(ref, turns=intents.label_lines(ref.turns))
    units = build_units(ref.turns, syn.turns)
    timing["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    E = None
    if cfg.use_embeddings:
        from simgen.realism.embed import embed

        # units.turns is sorted side 0 (reference) then side 1; embed each corpus on its own (own cache key)
        E = np.vstack([
            embed(units.turns.filter(pl.col("side") == s)["text"].to_list(), batch_size=cfg.embedding_batch_size, ray=ray)
            for s in (0, 1)
        ])
    timing["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    disc = _discriminate(units, E, cfg)
    timing["discriminators"] = time.perf_counter() - t

    attributes: dict[str, Any] = {}
    mauve: dict[str, Any] | None = None
    warnings = _sample_warnings(units, cfg)
    if cfg.attributes:
        from simgen.realism.distribution import run_attributes

        t = time.perf_counter()
        user_emb = E[units.user["row"].to_numpy()] if E is not None else None
        dlg_emb = _dialogue_mean(units, E) if E is not None else None
        attrs, mauve, attr_warn = run_attributes(units, user_emb, dlg_emb, cfg)
        attributes = {a["attribute"]: a for a in attrs}
        warnings += attr_warn
        timing["attributes"] = time.perf_counter() - t

    from simgen.realism.adherence import intent_adherence, shape

    t = time.perf_counter()
    adherence = intent_adherence(units, dict(intents.aliases) if intents is not None else {}, E, seed=cfg.seed, n_folds=cfg.n_folds)
    timing["adherence"] = time.perf_counter() - t

    lo, hi = disc["ensemble"]["dialogue"]["ci"]
    if hi - lo > 0.2:
        warnings.append(f"the ensemble AUC interval is wide ({lo:.2f}-{hi:.2f}): more dialogues on both sides would narrow it.")
    report: dict[str, Any] = {
        "check": "realism",
        "version": REPORT_VERSION,
        "auc": disc["ensemble"]["dialogue"]["auc"],
        "auc_ci": [lo, hi],
        "auc_level": "dialogue",
        "verdict": _verdict(disc["ensemble"]["dialogue"]["auc"], lo, hi),
        "synthetic": _describe(syn),
        "reference": _describe(ref),
        "n": {"reference": _counts(units, 0), "synthetic": _counts(units, 1)},
        "discriminators": disc["discriminators"] | {"ensemble": disc["ensemble"]},
        "attributes": attributes,
        "mauve": mauve,
        "shape": shape(units),
        "intent_adherence": adherence,
        "giveaways": disc["giveaways"],
        "examples": disc["examples"],
        "histograms": _histograms(units),
        "warnings": warnings,
        "notes": [
            "AUC 0.5: the discriminators cannot tell synthetic from reference; 1.0: they always can.",
            "AUC intervals are 95% cluster-bootstrap intervals over dialogues (each on its own).",
            "JSD/TV: value is the plug-in estimate (above 0 even for two samples of one corpus); value_bc is bias-corrected. "
            "Their intervals hold together at 95% across all attribute comparisons (Bonferroni); the lower end is 0 when the "
            "permutation test does not reject; p_value is raw, p_adjusted Bonferroni-adjusted.",
            "Sentiment labels come from a hand-written lexicon and classifiers trained on it: a proxy, not validated on labelled data.",
            "'Typos' are approximated by informal-spelling markers; no spelling dictionary is available offline.",
        ],
        "config": asdict(cfg),
        "embedding_model": model_tag(),
    }
    timing["total"] = time.perf_counter() - t0
    report["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    where = _out_folder(syn, out)
    if where:
        from simgen.files import write_report
        from simgen.realism.html import render_html

        paths = write_report(*where, report, render_html(report))
        report["paths"] = {k: str(v) for k, v in paths.items()}
    return report


def _intent_model(syn: Corpus) -> IntentModel | None:
    """The intent model of the run's scenario (its `aliases` map raw reference labels onto its intents,
    its `label_rules` label a reference that has none), if the run records a scenario that still loads."""
    scenario = syn.manifest.get("scenario")
    recorded = scenario.get("path") if isinstance(scenario, dict) else None
    if not recorded:
        return None
    from simgen.errors import SimgenError
    from simgen.scenario import load_scenario

    try:
        return load_scenario(recorded).intents
    except SimgenError:
        return None


def _out_folder(syn: Corpus, out: str | Path | None) -> tuple[Path, str] | None:
    """(folder, name) of the report: `--out`/report.*, else RUN/reports/realism.* for a run, else nowhere."""
    if out is not None:
        return Path(out), "report"
    if syn.kind == "run":
        return Path(syn.source) / "reports", "realism"
    return None


def _describe(c: Corpus) -> dict[str, Any]:
    d = {"name": c.name, "source": c.source, "kind": c.kind, "labels": list(c.labels)}
    if c.total_dialogues is not None:
        d["sampled"] = {"dialogues": c.n_dialogues, "of": c.total_dialogues}
    if c.manifest.get("scenario"):
        d["scenario"] = c.manifest["scenario"]
    return d


def _counts(units: Units, side: int) -> dict[str, int]:
    return {
        "dialogues": int((units.dialogues["side"] == side).sum()),
        "turns": int((units.turns["side"] == side).sum()),
        "user_turns": int((units.user["side"] == side).sum()),
    }


def _sample_warnings(units: Units, cfg: RealismConfig) -> list[str]:
    out = []
    for side, name in ((0, "reference"), (1, "synthetic")):
        c = _counts(units, side)
        if c["dialogues"] < cfg.min_dialogues:
            out.append(
                f"the {name} side has only {c['dialogues']} dialogues (fewer than {cfg.min_dialogues}): "
                "intervals over so few dialogues are wide and unreliable; treat every number as a rough hint."
            )
        if c["user_turns"] < cfg.min_user_turns:
            out.append(f"the {name} side has only {c['user_turns']} user turns (fewer than {cfg.min_user_turns}).")
    return out


def _verdict(auc: float, lo: float, hi: float) -> str:
    if lo <= 0.5 <= hi:
        return "indistinguishable at this sample size (the interval includes 0.5)"
    if auc < 0.6:
        return "barely distinguishable"
    if auc < 0.75:
        return "distinguishable"
    if auc < 0.9:
        return "easily distinguishable"
    return "trivially distinguishable"


def _dialogue_mean(units: Units, E: np.ndarray) -> np.ndarray:
    keys = units.dialogues["key"].to_list()
    idx = {k: i for i, k in enumerate(keys)}
    kk = np.fromiter((idx[k] for k in units.turns["key"].to_list()), dtype=int, count=units.turns.height)
    out = np.zeros((len(keys), E.shape[1]))
    np.add.at(out, kk, E[units.turns["row"].to_numpy()])
    out /= np.maximum(np.bincount(kk, minlength=len(keys)), 1)[:, None]
    return out.astype(np.float32)


def discriminate(units: Units, E: np.ndarray | None, cfg: RealismConfig) -> tuple[list, np.ndarray, np.ndarray]:
    """Train the discriminators (grouped CV) and stack them: (members, ensemble's out-of-fold score per user
    turn, per dialogue), rows in `units.user` and `units.dialogues` order. No dialogue is scored by a model that
    saw it in training."""
    from simgen.realism.discriminators import Context, per_dialogue_mean, run_discriminators, stack

    ctx = Context(seed=cfg.seed, turn_embeddings=E)
    members = run_discriminators(units, cfg.discriminators, ctx, n_folds=cfg.n_folds, top=cfg.n_giveaways)
    ukeys, dkeys = units.user["key"].to_numpy(), units.dialogues["key"].to_numpy()
    user_scores = [m.scores for m in members if m.level == "user_turn"]
    dlg_members = [m.scores for m in members if m.level == "dialogue"] + [
        per_dialogue_mean(s, ukeys, dkeys) for s in user_scores
    ]
    ens_u = stack(user_scores, units.y_user, ukeys, n_folds=cfg.n_folds, seed=cfg.seed)
    ens_d = stack(dlg_members, units.y_dialogue, dkeys, n_folds=cfg.n_folds, seed=cfg.seed)
    return members, ens_u, ens_d


def _discriminate(units: Units, E: np.ndarray | None, cfg: RealismConfig) -> dict[str, Any]:
    from simgen.realism.discriminators import REGISTRY, per_dialogue_mean
    from simgen.realism.stats import auc_with_ci

    members, ens_u, ens_d = discriminate(units, E, cfg)
    y_u, y_d = units.y_user, units.y_dialogue
    ukeys, dkeys = units.user["key"].to_numpy(), units.dialogues["key"].to_numpy()

    def ci(scores: np.ndarray, y: np.ndarray, keys: np.ndarray) -> dict:
        return auc_with_ci(scores, y, keys, n_boot=cfg.n_boot, ci=cfg.ci, seed=cfg.seed)

    out: dict[str, Any] = {}
    for m in members:
        entry = out.setdefault(m.name, {"description": REGISTRY[m.name].description})
        y, keys = (y_u, ukeys) if m.level == "user_turn" else (y_d, dkeys)
        entry[m.level] = ci(m.scores, y, keys)
    ensemble = {
        "description": "logistic regression stacked on the members' out-of-fold scores (cross-validated on fresh folds)",
        "user_turn": ci(ens_u, y_u, ukeys),
        "dialogue": ci(ens_d, y_d, dkeys),
        # the user-turn ensemble's scores averaged per dialogue: how far the user lines alone, each
        # judged on its own, tell dialogues apart (evidence that adds up over lines, not coherence)
        "dialogue_from_user_turns": ci(per_dialogue_mean(ens_u, ukeys, dkeys), y_d, dkeys),
    }
    giveaways = {
        "phrases": next((m.giveaways for m in members if m.name == "tfidf" and m.level == "user_turn"), []),
        "features": next((m.giveaways for m in members if m.name == "style" and m.level == "user_turn"), []),
        "dialogue_features": next((m.giveaways for m in members if m.name == "style" and m.level == "dialogue"), []),
    }
    return {"discriminators": out, "ensemble": ensemble, "giveaways": giveaways,
            "examples": _examples(units, ens_u, ens_d, E, cfg)}


def _examples(units: Units, ens_u: np.ndarray, ens_d: np.ndarray, E: np.ndarray | None, cfg: RealismConfig) -> dict:
    """The most synthetic-looking synthetic user turns (with their nearest reference turn) and dialogues."""
    u = units.user
    syn_idx = np.flatnonzero(units.y_user == 1)
    ref_idx = np.flatnonzero(units.y_user == 0)
    top = syn_idx[np.argsort(-ens_u[syn_idx], kind="stable")[: cfg.n_examples]]
    texts = u["text"].to_list()
    if E is not None:
        V = E[u["row"].to_numpy()]
        sims = V[top] @ V[ref_idx].T
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        X = TfidfVectorizer().fit_transform(texts)
        sims = (X[top] @ X[ref_idx].T).toarray()
    pairs = []
    for row, i in enumerate(top):
        j = ref_idx[int(sims[row].argmax())]
        pairs.append({
            "synthetic": texts[i], "dialogue_id": u["dialogue_id"][int(i)], "turn": int(u["turn"][int(i)]),
            "score": round(float(ens_u[i]), 4), "nearest_reference": texts[j],
            "reference_dialogue_id": u["dialogue_id"][int(j)], "similarity": round(float(sims[row].max()), 4),
        })
    d = units.dialogues
    dsyn = np.flatnonzero(units.y_dialogue == 1)
    dtop = dsyn[np.argsort(-ens_d[dsyn], kind="stable")[: cfg.n_examples]]
    dialogues = []
    for i in dtop:
        key = d["key"][int(i)]
        turns = units.turns.filter(pl.col("key") == key).head(8)
        dialogues.append({
            "dialogue_id": d["dialogue_id"][int(i)], "score": round(float(ens_d[i]), 4),
            "turns": [{"role": r, "text": t[:400]} for r, t in zip(turns["role"], turns["text"])],
        })
    return {"user_turns": pairs, "dialogues": dialogues}


def _histograms(units: Units) -> dict[str, Any]:
    out = {}
    words = units.user.select(pl.col("text").str.count_matches(r"\S+").alias("w"), "side")
    wmax = max(1, int(np.quantile(words["w"].to_numpy(), 0.99)))
    edges = np.unique(np.linspace(0, wmax + 1, min(25, wmax + 2)).astype(int))
    out["user_turn_words"] = _hist(words["w"].to_numpy(), words["side"].to_numpy(), edges)
    nt = units.dialogues["n_turns"].to_numpy()
    tmax = max(2, int(np.quantile(nt, 0.99)))
    edges = np.unique(np.linspace(1, tmax + 1, min(25, tmax + 1)).astype(int))
    out["turns_per_dialogue"] = _hist(nt, units.dialogues["side"].to_numpy(), edges)
    return out


def _hist(values: np.ndarray, sides: np.ndarray, edges: np.ndarray) -> dict:
    # last bin also holds everything above the top edge
    clipped = np.minimum(values, edges[-1] - 1e-9)
    res = {"edges": edges.tolist()}
    for s, name in ((0, "reference"), (1, "synthetic")):
        c, _ = np.histogram(clipped[sides == s], bins=edges)
        res[name] = (c / max(1, c.sum())).round(5).tolist()
    return res
