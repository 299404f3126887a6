"""`simgen rate`: a blind human realism test. People read dialogues one at a time, half from a run and
half from a real corpus, and say which they think were written by a simulated user.

    items.py    the item set: a seeded, balanced sample of both sides, cut to a comparable length,
                saved once as RUN/rating/items.json; each rater's own seeded order
    answers.py  RUN/rating/answers.jsonl: one row per answer, appended and fsynced as it is given
    stats.py    accuracy and ROC-AUC (from the confidence scale) with cluster-bootstrap CIs, kappa
    report.py   the report: people per rater and pooled, simgen's discriminators on the same items,
                the giveaway notes; reports/human.json and reports/human.html
    server.py   the web page (Starlette + uvicorn): one dialogue per page, keyboard or mouse
    check.py    the report as a `simgen.checks.Check`, so `simgen export hub` carries it

The page is for trusted local use: raters are names, not accounts.
"""

from simgen.rating.items import ItemSet, prepare_items

__all__ = ["ItemSet", "prepare_items"]
