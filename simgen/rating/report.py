"""The human realism report: what people said, next to what simgen's discriminators say of the same items.

    machine_scores(items, run)   the realism ensemble's out-of-fold score of every item (cached in
                                 RUN/rating/machine.json): the discriminators train on the run's and the
                                 reference's dialogues, all cut like the items, with grouped CV, so no
                                 item is scored by a model that saw it
    build_report(items, rows)    people per rater and pooled (stats.py), agreement, the machine on the same
                                 items, the giveaway notes grouped by what the item was and what was said
    write_report(run, report)    RUN/reports/human.json and human.html

Report shape: `verdict`, `pooled` and `raters` (answers, accuracy, auc, each with a 95% interval),
`agreement` (fleiss, cohen), `machine` (auc on the items, its interval, per discriminator, and the
rank correlation of its scores with people's mean suspicion per item), `notes`, `items` (the cut),
`n_boot`, `seed`.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simgen.files import atomic_write_json, now
from simgen.rating.items import ItemSet, cut_dialogue, dialogues_of, usable
from simgen.rating.stats import cohen_kappas, fleiss_kappa, item_auc, judged, suspicion

REPORT = "human"  # RUN/reports/human.json, human.html
MACHINE = "machine.json"  # RUN/rating/machine.json
DISCRIMINATORS = ("tfidf", "embedding", "style")
NOTE_GROUPS = {
    ("synthetic", "simulated"): "simulated, caught: what gave the simulator away",
    ("synthetic", "real"): "simulated, taken for real",
    ("real", "simulated"): "real, taken for simulated: what made people doubt real people",
    ("real", "real"): "real, taken for real",
}


def _frame(dialogues: dict[str, tuple[tuple[str, str], ...]]) -> pl.DataFrame:
    rows = [(did, t, role, text) for did, turns in dialogues.items() for t, (role, text) in enumerate(turns)]
    return pl.DataFrame(rows, schema={"dialogue_id": pl.String, "turn": pl.Int64, "role": pl.String, "text": pl.String},
                        orient="row")


def machine_scores(items: ItemSet, run_path: str | Path, *, discriminators: tuple[str, ...] = DISCRIMINATORS,
                   pool: int = 200, n_boot: int = 1000, refresh: bool = False) -> dict[str, Any]:
    """simgen's discriminators on the rated items: per-item ensemble scores and their AUC (see the module doc).

    pool: at most this many dialogues per side to train on (the rated ones always among them).
    """
    from simgen.corpora import load_corpus, sample_ids
    from simgen.realism.config import RealismConfig
    from simgen.realism.features import build_units
    from simgen.realism.report import discriminate
    from simgen.realism.stats import auc_with_ci

    path = items.folder / MACHINE
    key = {"items_id": items.items_id, "discriminators": list(discriminators), "pool": pool, "n_boot": n_boot}
    if path.is_file() and not refresh:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("key") == key:
                return cached
        except (ValueError, UnicodeDecodeError):
            pass  # a damaged cache is computed again
    seed = int(items.settings["seed"])
    split = items.settings["reference_split"]
    sides: dict[str, dict[str, tuple]] = {}
    for source, spec, sp in (("synthetic", str(run_path), None),
                             ("real", items.settings["reference"], None if split == "all" else split)):
        frame = usable(load_corpus(spec, split=sp).turns).with_columns(pl.col("dialogue_id").cast(pl.String))
        rated = {i.dialogue_id for i in items.items if i.source == source}
        extra = frame.filter(~pl.col("dialogue_id").is_in(list(rated)))["dialogue_id"]
        keep = rated | set(sample_ids(extra, max(0, pool - len(rated)), seed).to_list())
        sides[source] = {did: cut_dialogue(rows, items.max_user_turns)[0]
                         for did, rows in dialogues_of(frame).items() if did in keep}
    use_emb = "embedding" in discriminators
    cfg = RealismConfig(seed=seed, discriminators=tuple(discriminators), use_embeddings=use_emb, n_boot=n_boot)
    units = build_units(_frame(sides["real"]), _frame(sides["synthetic"]))
    E = None
    if use_emb:
        from simgen.realism.embed import embed

        E = np.vstack([embed(units.turns.filter(pl.col("side") == s)["text"].to_list(), batch_size=cfg.embedding_batch_size)
                       for s in (0, 1)])
    members, _, ens_d = discriminate(units, E, cfg)
    keys = units.dialogues["key"].to_list()
    at = {k: i for i, k in enumerate(keys)}
    item_rows = [at[f"{1 if it.source == 'synthetic' else 0}:{it.dialogue_id}"] for it in items.items]
    y = np.array([it.synthetic for it in items.items])
    scores = ens_d[item_rows]
    res = auc_with_ci(scores, y, np.array([it.item for it in items.items]), n_boot=n_boot, seed=seed)
    from simgen.realism.discriminators import per_dialogue_mean

    dkeys, ukeys = units.dialogues["key"].to_numpy(), units.user["key"].to_numpy()
    per: dict[str, float | None] = {}
    for m in members:
        s = m.scores if m.level == "dialogue" else per_dialogue_mean(m.scores, ukeys, dkeys)
        per[f"{m.name} ({m.level.replace('_', '-')})"] = item_auc(
            {it.item: float(s[r]) for it, r in zip(items.items, item_rows)}, {it.item: it.synthetic for it in items.items})
    out = {"key": key, "computed": now(), "discriminators": list(discriminators),
           "pool": {"synthetic": len(sides["synthetic"]), "real": len(sides["real"])},
           "auc": res["auc"], "auc_ci": res["ci"], "per_discriminator": per,
           "scores": {it.item: round(float(s), 4) for it, s in zip(items.items, scores)}}
    atomic_write_json(path, out)
    return out


def _spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return round(float(spearmanr(a, b).statistic), 4)


def _verdict(pooled: dict[str, Any]) -> str:
    if pooled["auc"] is None:
        return "not enough answers yet (people must have answered real and simulated items)"
    lo, hi = pooled["auc_ci"]
    if lo > 0.5:
        return "people can tell the simulated dialogues from real ones"
    if hi < 0.5:
        return "people took the simulated dialogues for real more often than the real ones"
    return "people could not tell the simulated dialogues from real ones (the interval includes 0.5)"


def _notes(items: ItemSet, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    groups: dict[str, list[dict[str, Any]]] = {label: [] for label in NOTE_GROUPS.values()}
    words: dict[str, Counter] = {label: Counter() for label in NOTE_GROUPS.values()}
    source = {it.item: it.source for it in items.items}
    for r in rows:
        note = (r.get("note") or "").strip()
        if not note:
            continue
        label = NOTE_GROUPS[(source[r["item"]], r["choice"])]
        groups[label].append({"note": note, "rater": r["rater"], "confidence": r["confidence"], "item": r["item"]})
        words[label].update(w for w in (t.strip(".,;:!?()\"'").lower() for t in note.split())
                            if len(w) > 2 and w not in ENGLISH_STOP_WORDS)
    return {label: {"count": len(groups[label]), "top_words": words[label].most_common(10), "notes": groups[label]}
            for label in groups}


def build_report(items: ItemSet, rows: list[dict[str, Any]], machine: dict[str, Any] | None = None, *,
                 n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The report of the answers `rows` on `items` (machine: `machine_scores`' result, or None)."""
    truth = {it.item: it.synthetic for it in items.items}
    pooled = judged(rows, truth, n_boot=n_boot, seed=seed)
    raters = {name: judged([r for r in rows if r["rater"] == name], truth, n_boot=n_boot, seed=seed)
              | {"done": sum(r["rater"] == name for r in rows) >= len(items.items)}
              for name in sorted({r["rater"] for r in rows})}
    report: dict[str, Any] = {
        "check": "human", "version": 1, "created": now(),
        "verdict": _verdict(pooled), "pooled": pooled, "raters": raters,
        "agreement": {"fleiss": fleiss_kappa(rows), "cohen": cohen_kappas(rows)},
        "machine": None, "notes": _notes(items, rows),
        "items": {"items_id": items.items_id, "n": len(items.items), **items.cut_summary(), "settings": items.settings},
        "n_boot": n_boot, "seed": seed,
        "explain": [
            "AUC uses the confidence: an answer is placed on one scale from 'real, sure' to 'simulated, sure'. 0.5: people "
            "cannot tell simulated from real dialogues; 1.0: they always can.",
            "Intervals are 95% cluster-bootstrap intervals over dialogues: a dialogue's answers are resampled together.",
            f"Every item was cut to at most {items.max_user_turns} user turns (and the reply to the last), on both sides alike; "
            "whitespace was collapsed the same way on both sides.",
        ],
    }
    if machine is not None:
        by_item: dict[str, list[int]] = {}
        for r in rows:
            by_item.setdefault(r["item"], []).append(suspicion(r["choice"], r["confidence"]))
        rated = sorted(by_item)
        report["machine"] = {
            "auc": machine["auc"], "auc_ci": machine["auc_ci"], "discriminators": machine["discriminators"],
            "per_discriminator": machine["per_discriminator"], "pool": machine["pool"],
            "people_auc_on_items": pooled["auc"],
            "rank_correlation_with_people": _spearman([machine["scores"][i] for i in rated],
                                                      [float(np.mean(by_item[i])) for i in rated]),
            "items_compared": len(rated),
        }
    return report


def write_report(run_path: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    from simgen.files import write_report as write

    return write(Path(run_path) / "reports", REPORT, report, render_html(report))


def _fmt(x: float | None, ci: list | None = None) -> str:
    if x is None:
        return "&ndash;"
    s = f"{x:.3f}"
    if ci and ci[0] is not None:
        s += f" <span class='muted'>[{ci[0]:.3f}, {ci[1]:.3f}]</span>"
    return s


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1000px;color:#222;padding:0 1rem}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem} .headline{font-size:1.25rem}
.muted{color:#666;font-size:.9rem} table{border-collapse:collapse;width:100%;font-size:.92rem;margin:.5rem 0}
td,th{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:left;vertical-align:top} th{background:#fafafa}
"""


def render_html(report: dict[str, Any], *, standalone: bool = True) -> str:
    """The report as HTML: a whole page, or (standalone=False) the body the rating page's results view embeds."""
    p, it = report["pooled"], report["items"]
    body = [
        f"<p class='headline'>People's AUC <b>{_fmt(p['auc'], p['auc_ci'])}</b>: {escape(report['verdict'])}.</p>",
        f"<p class='muted'>{p['answers']} answers on {it['n']} dialogues ({it['synthetic_items']} simulated, "
        f"{it['real_items']} real from <code>{escape(str(it['settings']['reference']))}</code>, split "
        f"{escape(str(it['settings']['reference_split']))}); cut to {it['max_user_turns']} user turns: "
        f"{it['synthetic_cut']} simulated and {it['real_cut']} real dialogues were longer.</p>",
        "<h2>People</h2><table><tr><th>rater</th><th>answers</th><th>accuracy</th><th>AUC</th>"
        "<th>said simulated</th><th>median s</th></tr>",
    ]
    for name, r in [("all raters", p), *report["raters"].items()]:
        body.append(f"<tr><td>{escape(name)}</td><td>{r['answers']}</td><td>{_fmt(r['accuracy'], r['accuracy_ci'])}</td>"
                    f"<td>{_fmt(r['auc'], r['auc_ci'])}</td><td>{_fmt(r.get('said_simulated'))}</td>"
                    f"<td>{_fmt(r.get('median_seconds'))}</td></tr>")
    body.append("</table>")
    f = report["agreement"]["fleiss"]
    body.append("<h2>Agreement</h2>" + (f"<p>Fleiss' kappa {_fmt(f['kappa'])} over {f['items']} dialogues with two or more answers.</p>"
                                        if f["items"] else "<p class='muted'>Needs two raters on a dialogue.</p>"))
    if report["agreement"]["cohen"]:
        body.append("<table><tr><th>raters</th><th>shared dialogues</th><th>agree</th><th>Cohen's kappa</th></tr>")
        for c in report["agreement"]["cohen"]:
            body.append(f"<tr><td>{escape(' & '.join(c['raters']))}</td><td>{c['items']}</td><td>{_fmt(c.get('agree'))}</td>"
                        f"<td>{_fmt(c['kappa'])}</td></tr>")
        body.append("</table>")
    m = report.get("machine")
    body.append("<h2>simgen's discriminators on the same dialogues</h2>")
    if m:
        body.append(f"<p>Ensemble AUC <b>{_fmt(m['auc'], m['auc_ci'])}</b> against people's {_fmt(m['people_auc_on_items'])}; "
                    f"rank correlation of its scores with people's mean suspicion per dialogue: "
                    f"{_fmt(m['rank_correlation_with_people'])} ({m['items_compared']} dialogues).</p><table>"
                    "<tr><th>discriminator</th><th>AUC on the rated dialogues</th></tr>")
        body += [f"<tr><td>{escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in m["per_discriminator"].items()]
        body.append(f"</table><p class='muted'>Trained with grouped cross-validation on {m['pool']['synthetic']} simulated "
                    f"and {m['pool']['real']} real dialogues cut like the items; each rated dialogue is scored by a model "
                    "that did not see it.</p>")
    else:
        body.append("<p class='muted'>Not in this report (<code>simgen rate RUN --report</code> computes it).</p>")
    body.append("<h2>Giveaway notes</h2>")
    for label, g in report["notes"].items():
        if not g["count"]:
            continue
        words = ", ".join(f"{escape(w)} ({c})" for w, c in g["top_words"])
        body.append(f"<h3>{escape(label)} ({g['count']})</h3><p class='muted'>frequent words: {words}</p><ul>")
        body += [f"<li>{escape(n['note'])} <span class='muted'>({escape(n['rater'])}, confidence {n['confidence']})</span></li>"
                 for n in g["notes"]]
        body.append("</ul>")
    body.append("".join(f"<p class='muted'>{escape(e)}</p>" for e in report["explain"]))
    if not standalone:
        return "\n".join(body)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>simgen human realism report</title>"
            f"<style>{CSS}</style></head><body><h1>Human realism report</h1>" + "\n".join(body) + "</body></html>")
