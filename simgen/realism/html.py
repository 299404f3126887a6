"""Render a realism report dict as one self-contained HTML page.

Plots are inline SVG drawn here (no plotting library, no scripts, no external files): AUC per
discriminator with CIs, reference-vs-synthetic bars per attribute, length histograms. Tables show
giveaway phrases and features, the most synthetic-looking turns next to their nearest reference
turn, and whole dialogues. Every plot is an `<svg class="plot" data-plot="...">` so tests can find
them. All corpus text is HTML-escaped.

It leaves out interactivity and styling beyond a small embedded stylesheet.
"""

from __future__ import annotations

from html import escape
from typing import Any

REF_COLOR = "#4c78a8"
SYN_COLOR = "#f58518"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.headline{font-size:1.3rem;margin:.6rem 0} .muted{color:#666;font-size:.9rem}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem .8rem;margin:.4rem 0}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0} td,th{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#fafafa} .grid{display:flex;flex-wrap:wrap;gap:1rem} .card{flex:1 1 480px}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
.turn-user{color:#8a4b00} .turn-assistant{color:#1f4e79} code{background:#f4f4f4;padding:0 .2rem}
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as an HTML document (str)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>simgen realism report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Realism report</h1>",
        f"<p class='muted'>synthetic: <code>{escape(report['synthetic']['source'])}</code> &middot; "
        f"reference: <code>{escape(report['reference']['source'])}</code></p>",
        f"<p class='headline'>Ensemble discriminator AUC <b>{report['auc']:.3f}</b> "
        f"(95% CI {report['auc_ci'][0]:.3f}&ndash;{report['auc_ci'][1]:.3f}): {escape(report['verdict'])}.</p>",
        "<p class='muted'>0.5 = the discriminators cannot tell synthetic from reference dialogues; 1.0 = they always can.</p>",
        _sample_table(report),
        *[f"<div class='warn'>{escape(w)}</div>" for w in report.get("warnings", [])],
        "<h2>Discriminators</h2>",
        _legend(("dialogue level", REF_COLOR), ("user-turn level", SYN_COLOR)),
        _auc_plot(report["discriminators"]),
        _auc_table(report["discriminators"]),
    ]
    if report.get("attributes"):
        parts += ["<h2>Attribute distributions</h2>", _legend(("reference", REF_COLOR), ("synthetic", SYN_COLOR))]
        parts.append(_attribute_table(report["attributes"], report.get("mauve")))
        parts.append("<div class='grid'>")
        for name, a in report["attributes"].items():
            head = next(lab for lab in a["labellers"] if lab["source"] == a["headline"])
            parts.append(
                f"<div class='card'><h3>{escape(name)}</h3><p class='muted'>{escape(head['source'])}: "
                f"{escape(head['method'])}</p>{_bar_plot(name, head)}</div>"
            )
        parts.append("</div>")
    parts += ["<h2>Lengths</h2>", _legend(("reference", REF_COLOR), ("synthetic", SYN_COLOR)), "<div class='grid'>"]
    for name, h in report["histograms"].items():
        parts.append(f"<div class='card'><h3>{escape(name.replace('_', ' '))}</h3>{_hist_plot(name, h)}</div>")
    parts.append("</div>")
    parts.append(_shape_and_adherence(report.get("shape"), report.get("intent_adherence")))
    parts += [_giveaways(report["giveaways"]), _examples(report["examples"]), "<h2>Notes</h2><ul>"]
    parts += [f"<li>{escape(n)}</li>" for n in report.get("notes", [])]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def _legend(*items: tuple[str, str]) -> str:
    return "<p class='legend'>" + "".join(f"<span style='background:{c}'></span>{escape(t)}" for t, c in items) + "</p>"


def _sample_table(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{side}</td><td>{n['dialogues']}</td><td>{n['turns']}</td><td>{n['user_turns']}</td></tr>"
        for side, n in report["n"].items()
    )
    return f"<table><tr><th>side</th><th>dialogues</th><th>turns</th><th>user turns</th></tr>{rows}</table>"


# the levels an AUC is reported at; the ensemble adds its user-turn scores averaged per dialogue
LEVEL_NAMES = ("dialogue", "dialogue_from_user_turns", "user_turn")
LEVEL_LABELS = {"dialogue_from_user_turns": "dialogue, user lines alone"}


def _auc_rows(disc: dict) -> list[tuple[str, str, dict]]:
    return [(name, level, d[level]) for name, d in disc.items() for level in LEVEL_NAMES if level in d]


def _auc_plot(disc: dict) -> str:
    rows = _auc_rows(disc)
    w, left, right, rh = 720, 170, 20, 22
    h = 30 + rh * len(rows) + 20
    lo, hi = 0.3, 1.0

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * (w - left - right)

    out = [f"<svg class='plot' data-plot='auc' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' "
           f"viewBox='0 0 {w} {h}' role='img' aria-label='AUC per discriminator with 95% CIs'>"]
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        style = "stroke='#999' stroke-dasharray='4'" if t == 0.5 else "stroke='#eee'"
        out.append(f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='20' y2='{h - 20}' {style}/>")
        out.append(f"<text x='{x(t):.1f}' y='{h - 5}' font-size='11' text-anchor='middle'>{t:.1f}</text>")
    for i, (name, level, r) in enumerate(rows):
        y = 30 + i * rh
        color = SYN_COLOR if level == "user_turn" else REF_COLOR
        out.append(f"<text x='{left - 8}' y='{y + 4}' font-size='12' text-anchor='end'>{escape(name)} ({escape(LEVEL_LABELS.get(level, level))})</text>")
        out.append(f"<line x1='{x(r['ci'][0]):.1f}' x2='{x(r['ci'][1]):.1f}' y1='{y}' y2='{y}' stroke='{color}' stroke-width='3'/>")
        out.append(f"<circle cx='{x(r['auc']):.1f}' cy='{y}' r='5' fill='{color}'><title>{r['auc']:.3f}</title></circle>")
    out.append("</svg>")
    return "".join(out)


def _auc_table(disc: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(LEVEL_LABELS.get(level, level))}</td><td>{r['auc']:.3f}</td>"
        f"<td>{r['ci'][0]:.3f}&ndash;{r['ci'][1]:.3f}</td><td class='muted'>{escape(disc[name].get('description', ''))}</td></tr>"
        for name, level, r in _auc_rows(disc)
    )
    return f"<table><tr><th>discriminator</th><th>level</th><th>AUC</th><th>95% CI</th><th>what it sees</th></tr>{rows}</table>"


SHARES = {"closing_endings": "last user line closes the chat", "midway_goodbyes": "lines saying goodbye before their side's last",
          "late_greetings": "lines greeting after their side's first"}


def _shape_and_adherence(shape: dict | None, adherence: dict | None) -> str:
    """Dialogue shape (lines per dialogue, words per line, endings) and intent adherence, as tables."""
    if not shape:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name.replace('_', ' '))}</td><td>{s['reference'].get('median', '-')}</td>"
        f"<td>{s['synthetic'].get('median', '-')}</td><td>{s['jsd']:.3f}</td></tr>"
        for name, s in shape.items() if name not in SHARES and name != "habits_per_dialogue")
    for name, label in SHARES.items():
        if name in shape:  # reports written before a share existed lack it
            share = {k: "-" if v is None else f"{100 * v:.0f}%" for k, v in shape[name].items()}
            rows += f"<tr><td>{label}</td><td>{share['reference']}</td><td>{share['synthetic']}</td><td></td></tr>"
    out = ["<h2>Dialogue shape</h2>",
           f"<table><tr><th>measure</th><th>reference median</th><th>synthetic median</th><th>JSD</th></tr>{rows}</table>"]
    if shape.get("habits_per_dialogue"):  # reports written before it lack it
        def cell(v: dict | None) -> str:
            return "-" if not v else f"{v['mean']:.2f} &plusmn; {v['sd']:.2f}"

        def ratio(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        per = "".join(f"<tr><td>{escape(h['what'])}</td><td>{cell(h['reference'])}</td><td>{cell(h['synthetic'])}</td>"
                      f"<td>{ratio(h['spread_ratio'])}</td></tr>" for h in shape["habits_per_dialogue"].values())
        out += ["<h3>Habits per dialogue: do users differ from each other as people do?</h3>",
                "<p>Per dialogue, the share of its user lines with each habit (and their mean words); the mean over dialogues "
                "&plusmn; the spread across them (SD). People keep their habits through a dialogue; a spread ratio under 1 "
                "says the simulated users type more alike than people, which the dialogue-level discriminators read.</p>",
                f"<table><tr><th>habit</th><th>reference</th><th>synthetic</th><th>spread ratio</th></tr>{per}</table>"]
    if adherence:
        c, s, r = adherence["ceiling"], adherence["synthetic"], adherence["ratio"]
        def recall(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        per = "".join(f"<tr><td>{escape(i)}</td><td>{v['n_synthetic']}</td><td>{recall(v['synthetic_recall'])}</td>"
                      f"<td>{recall(v['ceiling_recall'])}</td></tr>" for i, v in adherence["per_intent"].items())
        out += ["<h2>Intent adherence</h2>",
                f"<p>Does a synthetic line say what its intent latent asked for? {escape(adherence['classifier'])}, trained on the "
                f"reference's labelled user lines. Synthetic: accuracy <b>{s['accuracy']:.3f}</b>, macro-F1 {s['macro_f1']:.3f}; "
                f"ceiling ({escape(c['how'])}): accuracy {c['accuracy']:.3f}, macro-F1 {c['macro_f1']:.3f}; "
                f"ratio {r['accuracy']:.2f} (accuracy).</p>",
                f"<table><tr><th>intent</th><th>synthetic lines</th><th>synthetic recall</th><th>ceiling recall</th></tr>{per}</table>"]
    return "\n".join(out)


def _attribute_table(attrs: dict, mauve: dict | None) -> str:
    rows = []
    for name, a in attrs.items():
        j, t = a["jsd"], a["tv"]
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{escape(a['headline'])}</td><td>{j['value_bc']:.4f} "
            f"({j['ci'][0]:.4f}&ndash;{j['ci'][1]:.4f})</td><td>{t['value_bc']:.3f} ({t['ci'][0]:.3f}&ndash;{t['ci'][1]:.3f})</td>"
            f"<td>{j['p_value']:.3f} ({j.get('p_adjusted', j['p_value']):.3f})</td></tr>"
        )
    table = ("<table><tr><th>attribute</th><th>labeller (largest divergence)</th><th>JSD (simultaneous 95% CI)</th>"
             f"<th>TV (simultaneous 95% CI)</th><th>permutation p (adjusted)</th></tr>{''.join(rows)}</table>")
    if mauve:
        table += (f"<p>MAUVE-style score <b>{mauve['mauve']:.3f}</b> (&plusmn;{mauve['std']:.3f} over {mauve['seeds']} "
                  f"k-means seeds, k={mauve['k']}; 1 = same mix of user-turn clusters).</p>")
    return table


def _bar_plot(name: str, lab: dict) -> str:
    classes = lab["classes"]
    ref, syn = lab["reference"], lab["synthetic"]
    order = [i for i in sorted(range(len(classes)), key=lambda i: -(ref[i] + syn[i])) if ref[i] + syn[i] > 0][:15]
    w, left, rh = 480, 170, 24
    h = 10 + rh * len(order) + 10
    top = max([ref[i] for i in order] + [syn[i] for i in order] + [1e-9])

    def bw(v: float) -> float:
        return v / top * (w - left - 80)

    out = [f"<svg class='plot' data-plot='attribute-{escape(name)}' xmlns='http://www.w3.org/2000/svg' width='{w}' "
           f"height='{h}' viewBox='0 0 {w} {h}' role='img' aria-label='{escape(name)}: reference vs synthetic'>"]
    for r, i in enumerate(order):
        y = 10 + r * rh
        out.append(f"<text x='{left - 6}' y='{y + 14}' font-size='11' text-anchor='end'>{escape(str(classes[i])[:28])}</text>")
        out.append(f"<rect x='{left}' y='{y + 2}' width='{bw(ref[i]):.1f}' height='9' fill='{REF_COLOR}'><title>reference {ref[i]:.3f}</title></rect>")
        out.append(f"<rect x='{left}' y='{y + 11}' width='{bw(syn[i]):.1f}' height='9' fill='{SYN_COLOR}'><title>synthetic {syn[i]:.3f}</title></rect>")
        out.append(f"<text x='{left + max(bw(ref[i]), bw(syn[i])) + 4:.1f}' y='{y + 15}' font-size='10' fill='#555'>"
                   f"{ref[i]:.2f} / {syn[i]:.2f}</text>")
    out.append("</svg>")
    return "".join(out)


def _hist_plot(name: str, h: dict) -> str:
    edges, ref, syn = h["edges"], h["reference"], h["synthetic"]
    w, ht, pad = 480, 200, 30
    n = len(ref)
    top = max(ref + syn + [1e-9])
    bw = (w - 2 * pad) / max(1, n)
    out = [f"<svg class='plot' data-plot='hist-{escape(name)}' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{ht}' "
           f"viewBox='0 0 {w} {ht}' role='img' aria-label='{escape(name)} histogram'>"]
    for i in range(n):
        x0 = pad + i * bw
        for j, (v, c) in enumerate(((ref[i], REF_COLOR), (syn[i], SYN_COLOR))):
            bh = v / top * (ht - 2 * pad)
            out.append(f"<rect x='{x0 + j * bw / 2:.1f}' y='{ht - pad - bh:.1f}' width='{bw / 2:.1f}' height='{bh:.1f}' fill='{c}'>"
                       f"<title>{edges[i]}–{edges[i + 1] - 1}: {v:.3f}</title></rect>")
    for i in range(0, n + 1, max(1, n // 8)):
        out.append(f"<text x='{pad + i * bw:.1f}' y='{ht - 12}' font-size='10' text-anchor='middle'>{edges[i]}</text>")
    out.append(f"<line x1='{pad}' x2='{w - pad}' y1='{ht - pad}' y2='{ht - pad}' stroke='#999'/></svg>")
    return "".join(out)


def _giveaways(g: dict) -> str:
    parts = ["<h2>What gives synthetic text away</h2>"]
    phrases = [p for p in g.get("phrases", []) if p["towards"] == "synthetic"]
    if phrases:
        rows = "".join(
            f"<tr><td><code>{escape(p['phrase'])}</code></td><td>{p['weight']:.2f}</td>"
            f"<td>{p['synthetic_rate']:.1%}</td><td>{p['reference_rate']:.1%}</td></tr>" for p in phrases
        )
        parts.append("<h3>Phrases (user turns)</h3><table><tr><th>phrase</th><th>weight</th>"
                     f"<th>in synthetic turns</th><th>in reference turns</th></tr>{rows}</table>")
    for key, title in (("features", "Style features (user turns)"), ("dialogue_features", "Style features (dialogues)")):
        feats = g.get(key, [])
        if feats:
            rows = "".join(
                f"<tr><td>{escape(f['description'])}</td><td>{f['auc']:.3f}</td><td>{f['synthetic_mean']:.3g}</td>"
                f"<td>{f['reference_mean']:.3g}</td></tr>" for f in feats
            )
            parts.append(f"<h3>{title}</h3><table><tr><th>feature</th><th>AUC alone</th><th>synthetic mean</th>"
                         f"<th>reference mean</th></tr>{rows}</table>")
    return "".join(parts)


def _examples(ex: dict) -> str:
    parts = ["<h2>Most synthetic-looking examples</h2>"]
    pairs = ex.get("user_turns", [])
    if pairs:
        rows = "".join(
            f"<tr><td>{escape(p['synthetic'][:500])}</td><td>{p['score']:.2f}</td>"
            f"<td>{escape(p['nearest_reference'][:500])}</td><td>{p['similarity']:.2f}</td></tr>" for p in pairs
        )
        parts.append("<table><tr><th>synthetic user turn</th><th>P(synthetic)</th><th>nearest reference user turn</th>"
                     f"<th>similarity</th></tr>{rows}</table>")
    for d in ex.get("dialogues", []):
        turns = "".join(
            f"<div class='turn-{escape(t['role'])}'><b>{escape(t['role'])}:</b> {escape(t['text'])}</div>" for t in d["turns"]
        )
        parts.append(f"<h3>dialogue {escape(str(d['dialogue_id']))} &middot; P(synthetic) {d['score']:.2f}</h3>{turns}")
    return "".join(parts)
