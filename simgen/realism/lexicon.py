"""A small hand-written sentiment lexicon: a transparent proxy, not a trained or validated model.

No labelled sentiment or emotion data ships offline with simgen, so sentiment is labelled by
counting these words (a negator within the three words before flips a word's polarity). The
report names this labeller "lexicon (hand-written, unvalidated)". It sees English only, misses
sarcasm, and treats most turns as neutral; it is useful for spotting gross shifts (a simulator
that is always upbeat), not for fine sentiment.
"""

from __future__ import annotations

import re

import numpy as np

POSITIVE = frozenset("""
love loved loves lovely like liked likes enjoy enjoyed enjoying enjoys great good nice awesome amazing
wonderful fantastic excellent best better beautiful happy glad fun funny cool perfect brilliant
favorite favourite sweet cute interesting exciting excited thanks thank appreciate appreciated
pleasure pleased yay wow yes sure definitely agree fine well helpful recommend recommended hilarious
classic masterpiece incredible superb fabulous delighted laugh laughing smile win won hope hoping
impressive gorgeous glad kind enjoyable entertaining refreshing charming lucky proud
""".split())

NEGATIVE = frozenset("""
hate hated hates dislike disliked bad worse worst awful terrible horrible boring bored sad angry mad
annoying annoyed ugly stupid dumb sucks sucked disappointing disappointed disappoint poor wrong
sorry unfortunately tired sick hurt pain scary scared afraid worried worry stress stressed upset
lonely cry crying hard difficult problem problems fail failed failure lose lost miss missed meh ugh
no nope never nothing dull mediocre overrated waste confusing confused weird gross nasty hate
depressing depressed kill killed dead death died
""".split())

NEGATORS = frozenset("not no never dont don't doesnt doesn't didnt didn't isnt isn't wasnt wasn't cant can't wont won't".split())

_POS_EMOTICONS = re.compile(r"(?::|;|=)-?[)D]|<3|\b(?:haha+|lol|lmao)\b", re.I)
_NEG_EMOTICONS = re.compile(r"(?::|=)-?\(|:'\(")
_TOKEN = re.compile(r"[a-z']+")

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


def polarity(text: str) -> int:
    """Net polarity count of one text (positive words minus negative words, with negation)."""
    tokens = _TOKEN.findall(text.lower())
    score = 0
    for i, tok in enumerate(tokens):
        s = 1 if tok in POSITIVE else -1 if tok in NEGATIVE and tok not in NEGATORS else 0
        if s and any(t in NEGATORS for t in tokens[max(0, i - 3):i]):
            s = -s
        score += s
    score += len(_POS_EMOTICONS.findall(text)) - len(_NEG_EMOTICONS.findall(text))
    return score


def sentiment_labels(texts: list[str]) -> np.ndarray:
    """Index into LABELS per text: 0 negative, 1 neutral, 2 positive."""
    return np.array([1 + int(np.sign(polarity(t))) for t in texts], dtype=int)
