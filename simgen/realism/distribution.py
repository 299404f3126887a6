"""Classifier-ensemble distribution matching: do both corpora show the same mix of intents,
sentiment, topics and lengths?

For each attribute, a labeller gives every unit (user turn or dialogue) of both sides one label,
and the two label distributions are compared (JSD and TV with bootstrap CIs, permutation p-value;
see `stats.divergence_test`). Labellers, by what data exists:

- intent / dialogue act: one labeller per label source, i.e. the reference's `intent` column
  (e.g. IARD's annotated acts) and the synthetic run's intent latents. Each trains an ensemble of
  two classifiers (TF-IDF + logistic regression, embeddings + logistic regression; probabilities
  averaged) and labels *both* sides by cross-fitting: every dialogue, of either side, is labelled
  by a model that never saw it, so the side that supplied the labels is not labelled more
  accurately than the other. With no labels on either side: k-means clusters of user-turn
  embeddings (an unsupervised proxy, said so in the report).
- sentiment: a hand-written lexicon (see `lexicon.py`), and the same classifier ensemble trained on
  the lexicon's labels (which generalises past the word list). Neither is validated on labelled
  sentiment data; the report says so.
- topic: k-means clusters of dialogue embeddings (mean of all turns), fitted on both sides pooled,
  named by their most distinctive words.
- length and style bins: user-turn word counts, turns per dialogue, and a coarse style class.

Each attribute's headline divergence is its largest across labellers (the most conservative).
Intervals are Bonferroni-adjusted across all labellers of all attributes (each at level
1 - 0.05/m for m comparisons), so that together they cover the truth with 95% probability; a
report of a dozen marginal 95% intervals would show a "significant" difference between two
halves of one corpus about half the time. Raw and adjusted permutation p-values are both given.
A MAUVE-style score over user-turn embedding clusters is averaged over several k-means seeds.

It leaves out emotion categories beyond polarity and any labeller that would need downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from simgen.realism.discriminators import make_folds
from simgen.realism.features import Units, length_bins
from simgen.realism.stats import divergence_test, mauve_score

USER_LENGTH_EDGES = (0, 3, 6, 11, 21, 41)
DIALOGUE_LENGTH_EDGES = (1, 3, 5, 9, 17, 33)
STYLE_CLASSES = ("question", "exclamation", "informal", "statement")


@dataclass(frozen=True)
class Labelling:
    """One labeller's output: a label index per unit of both sides."""

    source: str  # e.g. "reference labels (intent)"
    method: str  # how the labels were made
    classes: list[str]
    labels: np.ndarray = field(repr=False)  # (n_units,) index into classes
    agreement: float | None = None  # cross-fitted accuracy on the labelled units, when trained
    note: str = ""


def _counts(labels: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dialogue label counts: (dialogue keys, (n_keys, k))."""
    uniq, inv = np.unique(keys, return_inverse=True)
    counts = np.zeros((len(uniq), k))
    np.add.at(counts, (inv, labels), 1)
    return uniq, counts


def compare_labelling(lab: Labelling, keys: np.ndarray, sides: np.ndarray, cfg: Any, n_tests: int = 1) -> dict:
    """Divergence report of one labelling between the sides (interval level Bonferroni-adjusted
    for `n_tests` comparisons; p_value raw, p_adjusted = min(1, p * n_tests))."""
    k = len(lab.classes)
    out_a = _counts(lab.labels[sides == 0], keys[sides == 0], k)[1]
    out_b = _counts(lab.labels[sides == 1], keys[sides == 1], k)[1]
    level = 1 - (1 - cfg.ci) / n_tests
    res = divergence_test(out_a, out_b, n_boot=cfg.n_boot, n_perm=cfg.n_perm, ci=level, seed=cfg.seed)
    for m in ("jsd", "tv"):
        res[m]["p_adjusted"] = round(min(1.0, res[m]["p_value"] * n_tests), 4)
        res[m]["ci_level"] = round(level, 5)
    row = {"source": lab.source, "method": lab.method, "classes": lab.classes, **res}
    if lab.agreement is not None:
        row["cv_agreement"] = round(lab.agreement, 4)
    if lab.note:
        row["note"] = lab.note
    return row


def cross_fit_labels(
    feature_sets: list[Any], labels: list[str | None], keys: np.ndarray, sides: np.ndarray, *, n_folds: int, seed: int
) -> tuple[list[str], np.ndarray, float]:
    """Train the classifier ensemble on the labelled units and label every unit out-of-fold.

    feature_sets: one (n, F) matrix per ensemble member; labels: (n,) str or None.
    Returns (classes, (n,) label index, agreement of predictions with the given labels).
    """
    from sklearn.linear_model import LogisticRegression

    lab = np.array([x if x is not None else "" for x in labels], dtype=object)
    has = lab != ""
    classes = sorted(set(lab[has]))
    cidx = {c: i for i, c in enumerate(classes)}
    y = np.array([cidx.get(x, -1) for x in lab])
    folds = make_folds(keys, sides, n_folds, seed + 7)
    probs = np.zeros((len(lab), len(classes)))
    for k in np.unique(folds):
        train = (folds != k) & has
        test = folds == k
        if len(np.unique(y[train])) < 2:
            probs[np.ix_(test, [int(np.bincount(y[train]).argmax())])] += 1
            continue
        for X in feature_sets:
            m = LogisticRegression(C=1.0, max_iter=300, tol=1e-3).fit(X[train], y[train])
            probs[np.ix_(test, m.classes_)] += m.predict_proba(X[test])
    pred = probs.argmax(1)
    agreement = float((pred[has] == y[has]).mean()) if has.any() else float("nan")
    return classes, pred, agreement


def _tfidf(texts: list[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=5_000, sublinear_tf=True).fit_transform(texts)


def _representation(texts: list[str], emb: np.ndarray | None, dims: int = 64, seed: int = 0) -> np.ndarray:
    """Dense vectors for clustering: PCA of embeddings, or SVD of TF-IDF when there are none."""
    from sklearn.decomposition import PCA, TruncatedSVD

    if emb is not None:
        d = min(dims, emb.shape[0] - 1, emb.shape[1])
        return PCA(n_components=d, random_state=seed).fit_transform(emb) if d >= 2 else emb
    X = _tfidf(texts)
    d = max(1, min(dims, X.shape[1] - 1, X.shape[0] - 1))
    return TruncatedSVD(n_components=d, random_state=seed).fit_transform(X)


def _cluster_names(texts: list[str], labels: np.ndarray, k: int) -> list[str]:
    """'c<i>: w1, w2, w3' with each cluster's most over-represented words."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vec = TfidfVectorizer(stop_words="english", min_df=2, max_features=20_000)
        X = vec.fit_transform(texts)
    except ValueError:  # empty vocabulary
        return [f"c{i}" for i in range(k)]
    names = vec.get_feature_names_out()
    overall = np.asarray(X.mean(0)).ravel()
    out = []
    for i in range(k):
        m = labels == i
        if not m.any():
            out.append(f"c{i}")
            continue
        lift = np.asarray(X[m].mean(0)).ravel() - overall
        out.append(f"c{i}: " + ", ".join(names[j] for j in np.argsort(-lift)[:3]))
    return out


def kmeans_labels(R: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means cluster per row; k is capped at the number of distinct rows (labels stay in 0..k-1)."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(np.unique(np.round(R, 6), axis=0))))
    return KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit_predict(R)


def auto_k(n: int, cfg: Any, lo: int = 4, hi: int = 12) -> int:
    if cfg.n_clusters:
        return min(cfg.n_clusters, max(2, n - 1))
    return int(np.clip(round(np.sqrt(n / 4)), lo, hi))


def style_class(texts: list[str]) -> np.ndarray:
    s = pl.Series(texts)
    q = s.str.contains(r"\?").to_numpy()
    e = s.str.contains("!").to_numpy()
    informal = (~s.str.contains(r"[A-Z]") | ~s.str.contains(r"[.!?]\s*$")).to_numpy()
    return np.where(q, 0, np.where(e, 1, np.where(informal, 2, 3)))


def run_attributes(units: Units, user_emb: np.ndarray | None, dlg_emb: np.ndarray | None, cfg: Any) -> tuple[list[dict], dict, list[str]]:
    """All attribute comparisons, the MAUVE-style score, and warnings."""
    from simgen.realism.lexicon import LABELS, sentiment_labels

    warnings: list[str] = []
    u = units.user
    ukeys, usides = u["key"].to_numpy(), u["side"].to_numpy()
    utexts = u["text"].to_list()
    dkeys, dsides = units.dialogues["key"].to_numpy(), units.dialogues["side"].to_numpy()
    members = [_tfidf(utexts)] + ([user_emb] if user_emb is not None else [])
    member_names = ["tfidf+lr"] + (["embedding+lr"] if user_emb is not None else [])
    R_user = _representation(utexts, user_emb, seed=cfg.seed)
    attrs: list[tuple] = []  # pending comparisons, run together in _compare_all

    # intent / dialogue act
    intent_labs: list[Labelling] = []
    intents = u["intent"].to_list()
    for side, who in ((0, "reference labels"), (1, "synthetic labels")):
        vals = [x if s == side else None for x, s in zip(intents, usides)]
        present = {x for x in vals if x is not None}
        n_lab = sum(x is not None for x in vals)
        if n_lab == 0:
            continue
        if len(present) < 2:
            warnings.append(f"{who}: every labelled user turn has intent {next(iter(present))!r}; "
                            "one class cannot train a classifier, so this label source was skipped.")
            continue
        classes, pred, agree = cross_fit_labels(members, vals, ukeys, usides, n_folds=cfg.n_folds, seed=cfg.seed)
        intent_labs.append(Labelling(f"{who} (intent)", "classifier ensemble: " + " + ".join(member_names),
                                     classes, pred, agree))
    if not intent_labs:
        k = auto_k(len(utexts), cfg)
        lab = kmeans_labels(R_user, k, cfg.seed)
        intent_labs.append(Labelling("unlabelled: user-turn clusters", f"k-means (k={k}) on user-turn embeddings",
                                     _cluster_names(utexts, lab, k), lab,
                                     note="no intent labels on either side; clusters are an unsupervised proxy"))
    attrs.append(_attribute("intent", "user_turn", intent_labs, ukeys, usides, cfg))

    # sentiment
    lex = sentiment_labels(utexts)
    sent = [Labelling("lexicon (hand-written, unvalidated)", "word-list polarity with negation", list(LABELS), lex,
                      note="a proxy: no labelled sentiment data ships offline")]
    if len(np.unique(lex)) >= 2:
        classes, pred, agree = cross_fit_labels(members, [LABELS[i] for i in lex], ukeys, usides,
                                                n_folds=cfg.n_folds, seed=cfg.seed)
        sent.append(Labelling("classifiers trained on lexicon labels", "classifier ensemble: " + " + ".join(member_names),
                              classes, pred, agree, note="generalises the lexicon; inherits its bias"))
    attrs.append(_attribute("sentiment", "user_turn", sent, ukeys, usides, cfg))

    # topic
    dtexts = (units.dialogues["user_text"] + " \n " + units.dialogues["assistant_text"]).to_list()
    k = auto_k(len(dtexts), cfg)
    R_dlg = _representation(dtexts, dlg_emb, seed=cfg.seed)
    tl = kmeans_labels(R_dlg, k, cfg.seed)
    attrs.append(_attribute("topic", "dialogue", [Labelling(
        "dialogue clusters", f"k-means (k={k}) on {'dialogue embeddings' if dlg_emb is not None else 'TF-IDF SVD'}",
        _cluster_names(dtexts, tl, k), tl, note="clusters of both sides pooled; names are their distinctive words")],
        dkeys, dsides, cfg))

    # length and style bins
    words = u.select(pl.col("text").str.count_matches(r"\S+"))["text"].to_numpy()
    li, ln = length_bins(words, USER_LENGTH_EDGES)
    attrs.append(_attribute("length", "user_turn", [Labelling("words per user turn", "bins", ln, li)], ukeys, usides, cfg))
    di, dn = length_bins(units.dialogues["n_turns"].to_numpy(), DIALOGUE_LENGTH_EDGES)
    attrs.append(_attribute("dialogue_length", "dialogue", [Labelling("turns per dialogue", "bins", dn, di)],
                            dkeys, dsides, cfg))
    attrs.append(_attribute("style", "user_turn", [Labelling(
        "style class", "first match of: has '?', has '!', informal (no capitals or no final punctuation), statement",
        list(STYLE_CLASSES), style_class(utexts))], ukeys, usides, cfg))

    return _compare_all(attrs, cfg), mauve(R_user, usides, cfg), warnings


def _attribute(name: str, unit: str, labs: list[Labelling], keys: np.ndarray, sides: np.ndarray, cfg: Any) -> tuple:
    return name, unit, labs, keys, sides


def _compare_all(pending: list[tuple], cfg: Any) -> list[dict]:
    """Run every attribute's comparisons with intervals adjusted across all of them."""
    n_tests = sum(len(p[2]) for p in pending)
    out = []
    for name, unit, labs, keys, sides in pending:
        rows = [compare_labelling(lab, keys, sides, cfg, n_tests) for lab in labs]
        head = max(rows, key=lambda r: r["jsd"]["value_bc"])
        out.append({"attribute": name, "unit": unit, "jsd": head["jsd"], "tv": head["tv"], "headline": head["source"],
                    "labellers": rows})
    return out


def mauve(R: np.ndarray, sides: np.ndarray, cfg: Any) -> dict:
    """MAUVE-style score over user-turn clusters, averaged over `cfg.mauve_seeds` k-means seeds."""
    n = len(R)
    k = cfg.n_clusters or int(np.clip(n // 25, 5, 100))
    k = min(k, max(2, n - 1))
    vals = []
    for s in range(cfg.mauve_seeds):
        lab = kmeans_labels(R, k, cfg.seed + 1000 + s)
        vals.append(mauve_score(lab[sides == 1], lab[sides == 0], k))
    v = np.asarray(vals)
    return {"mauve": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
            "min": round(float(v.min()), 4), "max": round(float(v.max()), 4), "k": k, "seeds": len(v),
            "values": [round(float(x), 4) for x in v],
            "note": "1 = same cluster mix; computed on user-turn embeddings (PCA to 64 dims), k-means on both sides pooled"}
