"""The realism guard: does a line read like a person's, or like the simulator's own?

`simgen realism` tells the default dialogues from people's line by line: a classifier fitted on a
run's lines against real ones finds the simulator's habits (README "Sim-to-real"). The guard is
such a classifier turned on generation. Fitted once per side on the real corpus's train split
against a run of the scenario's own simulator (scripts/fit_realism_guard.py), it gives
p(human | line); with redraws on, a line that reads less human than three real lines in four is
drawn again, as the intent guard redraws a line off its intent. The kept line is still the model's
own sample, conditioned on passing: rejection sampling toward the lines people write, which is
what the discriminators look for (a thresholded form of Azadi et al.'s "Discriminator Rejection
Sampling", 2019, which accepts a GAN's samples by its discriminator's odds).

The classifier is the intent guard's (simgen/intent_guard.py): TF-IDF word 1-2 grams and char 2-4
grams, hashed, into a balanced logistic regression, here over `human` and `simulator` lines and
with case kept (people's capitals and lower case are a tell). The threshold is the `QUANTILE` of
real lines' out-of-fold p(human), each scored by a classifier that never saw its dialogue. The
file keeps hashed buckets, idf, weights and the threshold, never text, so a scenario can ship the
guard of a corpus that cannot ship itself.

What it is fitted on decides what it is worth. It learns one simulator's tells: a guard fitted
against another simulator, or against a run that was itself guarded, judges the wrong lines, so
the fitting script refuses a run written with the guard on and records the simulator it read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simgen.intent_guard import QUANTILE, IntentGuard

HUMAN, SIMULATOR = "human", "simulator"
KIND = "realism"
SIDES = ("user", "assistant")


class RealismGuard:
    """p(human | line) from a classifier of people's lines against the simulator's, and the threshold under which a line misses."""

    def __init__(self, classifier: IntentGuard) -> None:
        self.classifier = classifier
        self.threshold = classifier.thresholds[HUMAN]
        self.meta: dict[str, Any] = classifier.meta
        self._human = classifier.classes.index(HUMAN)

    @classmethod
    def fit(cls, human: Sequence[str], human_dialogues: Sequence[str], simulated: Sequence[str], simulated_dialogues: Sequence[str],
            *, quantile: float = QUANTILE, seed: int = 0, source: str = "", about: dict[str, Any] | None = None) -> RealismGuard:
        """Fit on real lines and the simulator's, each with its dialogue's id (folds keep a dialogue
        together). `about` goes into the file's meta (the fitting script records the run and its simulator)."""
        texts = [*human, *simulated]
        labels = [HUMAN] * len(human) + [SIMULATOR] * len(simulated)
        groups = [f"{HUMAN}:{g}" for g in human_dialogues] + [f"{SIMULATOR}:{g}" for g in simulated_dialogues]
        classifier = IntentGuard.fit(texts, labels, groups, seed=seed, quantile=quantile, source=source, lowercase=False, kind=KIND)
        classifier.meta.update(about or {})
        return cls(classifier)

    def p_human(self, texts: Sequence[str]) -> np.ndarray:
        """p(human | line) for each of `texts`."""
        return self.classifier.probabilities(texts)[:, self._human]

    def misses(self, text: str) -> bool:
        """Whether `text` reads less like a person's line than three real lines in four (the fitted quantile)."""
        return bool(self.p_human([text])[0] < self.threshold)

    def save(self, path: str | Path) -> Path:
        return self.classifier.save(path)

    @classmethod
    def load(cls, path: str | Path) -> RealismGuard:
        """The guard in `path`; a DataError naming it when it is not a realism guard file."""
        return cls(IntentGuard.load(path, kind=KIND))
