"""The consistency report: `reports/consistency.json` and a self-contained `reports/consistency.html`.

The JSON holds which judge (and which simulator model, for Q&A and the axis) was used, the config,
the scores overall (mean and standard error over dialogues) and per dialogue, the drift curves (the
scores by user-turn index), the persona axis summary, what was not computed and why, and the
caveats a reader needs. The HTML shows the same with the drift curves first, as inline SVG (no
plotting library, no scripts), then specificity, the axis, the dialogues worst first, and the lines
the judge found most contradictory. All dialogue text is HTML-escaped. This module computes nothing.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

NOTES = (
    "Consistency alone rewards a persona that says nothing: a line that commits to no fact is never "
    "contradicted. Read the scores beside specificity (profile attributes mentioned per line) and realism.",
    "Q&A is graded against the sampled profile (ground truth), not against what the persona said earlier.",
    "prompt_to_line and line_to_line are expected fractions under the judge's probabilities; the *_thresholded "
    "values count a line or pair as contradicting at P >= threshold.",
    "A small judge is weak: see `simgen judge-eval` for this judge's accuracy on hand-labelled items before trusting a score.",
)

SERIES = (("prompt_to_line", "#4c78a8"), ("line_to_line", "#f58518"), ("qa", "#54a24b"))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem} .muted{color:#666;font-size:.9rem}
.judge{background:#eef4fb;border-left:4px solid #4c78a8;padding:.5rem .8rem} .warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem .8rem;margin:.4rem 0}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0} td,th{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#fafafa} .legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "&ndash;"
    return f"{v:.{digits}f}" if isinstance(v, float) else escape(str(v))


def _line_plot(name: str, points: dict[str, list[tuple[int, float | None]]], colors: dict[str, str],
               y_range: tuple[float, float] | None = (0.0, 1.0), title: str = "") -> str:
    """An SVG line chart: x = user turn, one polyline per series; `data-plot` names it for tests."""
    w, h, left, bottom, top, right = 640, 260, 48, 36, 14, 16
    xs = sorted({x for pts in points.values() for x, y in pts if y is not None})
    ys = [y for pts in points.values() for _, y in pts if y is not None]
    if not xs:
        return f"<p class='muted'>{escape(title or name)}: nothing to plot.</p>"
    lo, hi = y_range if y_range else (min(ys), max(ys))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5

    def px(x: float) -> float:
        return left + (x - xs[0]) / max(xs[-1] - xs[0], 1) * (w - left - right)

    def py(y: float) -> float:
        return top + (1 - (y - lo) / (hi - lo)) * (h - top - bottom)

    parts = [f"<svg class='plot' data-plot='{escape(name)}' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' aria-label='{escape(title or name)}'>",
             f"<line x1='{left}' y1='{h - bottom}' x2='{w - right}' y2='{h - bottom}' stroke='#999'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{h - bottom}' stroke='#999'/>"]
    for frac in (0.0, 0.5, 1.0):
        y = lo + frac * (hi - lo)
        parts.append(f"<text x='{left - 6}' y='{py(y) + 4:.1f}' font-size='11' text-anchor='end'>{y:.2f}</text>")
        parts.append(f"<line x1='{left}' y1='{py(y):.1f}' x2='{w - right}' y2='{py(y):.1f}' stroke='#eee'/>")
    for x in xs:
        parts.append(f"<text x='{px(x):.1f}' y='{h - bottom + 16}' font-size='11' text-anchor='middle'>{x}</text>")
    parts.append(f"<text x='{(left + w - right) / 2}' y='{h - 4}' font-size='11' text-anchor='middle'>user turn</text>")
    for series, pts in points.items():
        good = [(x, y) for x, y in pts if y is not None]
        if not good:
            continue
        color = colors.get(series, "#333")
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{coords}'><title>{escape(series)}</title></polyline>")
        parts += [f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3' fill='{color}'><title>{escape(series)} turn {x}: {y:.3f}</title></circle>" for x, y in good]
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: list[tuple[str, str]]) -> str:
    return "<p class='legend'>" + "".join(f"<span style='background:{c}'></span>{escape(n)}" for n, c in items) + "</p>"


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML document (str)."""
    judge = report["judge"]
    o = report["overall"]
    drift = report["drift"]
    colors = dict(SERIES)
    curves = {s: [(r["user_turn"], r[s]) for r in drift] for s, _ in SERIES}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>simgen consistency report</title>",
        f"<style>{CSS}</style></head><body><h1>Persona consistency</h1>",
        f"<p class='muted'>run: <code>{escape(str(report.get('run')))}</code> &middot; {report['overall']['dialogues']} dialogues, "
        f"{report['overall']['lines']} user lines &middot; {escape(str(report.get('created', '')))}</p>",
        f"<div class='judge'><b>Judge:</b> <code>{escape(judge.get('judge', '?'))}</code> "
        f"{escape(str(judge.get('model', '')))} &middot; {escape(str(judge.get('read_as', '')))}"
        + (f"<br><b>Q&amp;A and persona axis model:</b> {escape(str(report['simulator'].get('model', {}).get('id', '')))}" if report.get("simulator") else "")
        + "</div>",
        "<h2>Drift: scores by user turn</h2>",
        "<p class='muted'>Where the lines fall, the personas fall apart. 1 = consistent.</p>",
        _legend(list(SERIES)),
        _line_plot("drift", curves, colors, (0.0, 1.0), "consistency by user turn"),
        "<table><tr><th>score</th><th>mean over dialogues</th><th>se</th><th>n</th></tr>",
    ]
    for key in ("prompt_to_line", "line_to_line", "qa", "prompt_to_line_thresholded", "line_to_line_thresholded", "specificity", "specific_lines", "persona_projection"):
        v = o[key]
        parts.append(f"<tr><td>{escape(key)}</td><td>{_fmt(v['mean'])}</td><td>{_fmt(v['se'])}</td><td>{v['n']}</td></tr>")
    parts.append("</table>")
    parts += [f"<div class='warn'>{escape(n)}</div>" for n in report.get("notes", [])]
    parts += [f"<div class='warn'>{escape(k)} not computed: {escape(v)}</div>" for k, v in report.get("not_computed", {}).items()]
    parts += ["<h2>Specificity by user turn</h2>",
              "<p class='muted'>Profile attributes a line mentions, on average. A consistent persona that says nothing scores 0 here.</p>",
              _line_plot("specificity", {"specificity": [(r["user_turn"], r["specificity"]) for r in drift]}, {"specificity": "#b279a2"}, None, "specificity")]
    axis = report.get("axis")
    if axis:
        parts += ["<h2>Persona axis</h2>",
                  f"<p class='muted'>Layer {axis['layer']}: projection of each user line on the direction from persona to default assistant "
                  f"(persona lines mean {axis['persona_mean']:.3f}, assistant lines mean {axis['assistant_mean']:.3f}). Higher = more assistant-like.</p>",
                  _line_plot("axis", {"persona_projection": [(r["user_turn"], r["persona_projection"]) for r in drift]}, {"persona_projection": "#e45756"}, None, "persona projection")]
    parts += ["<h2>Dialogues, least consistent first</h2>",
              "<table><tr><th>dialogue</th><th>lines</th><th>prompt-to-line</th><th>line-to-line</th><th>Q&amp;A</th><th>specificity</th></tr>"]
    for d in sorted(report["dialogues"], key=lambda d: (d["prompt_to_line"] if d["prompt_to_line"] is not None else 2.0))[:50]:
        parts.append(f"<tr><td>{escape(d['dialogue_id'])}</td><td>{d['lines']}</td><td>{_fmt(d['prompt_to_line'])}</td>"
                     f"<td>{_fmt(d['line_to_line'])}</td><td>{_fmt(d['qa'])}</td><td>{_fmt(d['specificity'], 2)}</td></tr>")
    parts.append("</table>")
    worst = report.get("worst_lines", [])
    if worst:
        parts += ["<h2>Lines the judge found most contradictory</h2>",
                  "<table><tr><th>dialogue</th><th>turn</th><th>P(contradiction)</th><th>persona</th><th>line</th></tr>"]
        parts += [f"<tr><td>{escape(w['dialogue_id'])}</td><td>{w['turn']}</td><td>{_fmt(w['p2l_contradiction'])}</td>"
                  f"<td class='muted'>{escape(w['persona'])}</td><td>{escape(w['text'])}</td></tr>" for w in worst]
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write consistency.json and consistency.html into `out` (created), atomically."""
    from simgen.files import write_report as write

    report["paths"] = {k: str(out / f"consistency.{k}") for k in ("json", "html")}
    return write(out, "consistency", report, render_html(report))
