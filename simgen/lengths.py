"""Line lengths: a turn-level latent, drawn per user turn from what real people write.

A scenario may name a length model (`lengths:` in its YAML: the path of its own file, or inline).
It holds, per intent, how many words real user lines of that intent have, as counts fitted on the
`train` split of the scenario's real corpus (scripts/fit_lengths.py writes it):

    unit: words
    source: "IARD, train split: 265 dialogues, 1,791 user lines"   # free text, for people
    lengths:                     # label -> {words: count}; "*" covers every intent without a row
      "*": {1: 40, 2: 61, ...}
      IQU: {3: 4, 4: 9, ...}
    dialogues: {5: 60, 6: 51, ...}   # optional: user lines per dialogue -> count
    last_word: {user: 127, assistant: 138}   # optional: dialogues whose last line is the user's / the assistant's
    first_word: {user: 90, assistant: 175}   # optional: dialogues whose first line is the user's / the assistant's
    assistant: {1: 35, 2: 50, ...}   # optional: words per assistant line, where the other side is a person too

Each user turn's target (`target_words` on its row) is drawn from its intent's row, from the
dialogue's own seeded stream, before any model speaks. The simulator ends the line at the sentence
end closest to the target (`cut_to_target`); a backend may stop generating as soon as that end is
known (`target_reached`).

With a `dialogues` row, each dialogue also draws how many user lines it has (`sample_turns`, its own
stream, capped by --max-turns), and its intent path is drawn conditioned on reaching a terminal
intent at exactly that line (`IntentModel.sample_path(length=...)`): real dialogue lengths, and a
closing line at the end, instead of a chain cut off by the cap. With a `last_word` row, each
dialogue also draws whether the assistant answers the user's closing line (`sample_reply`, its own
stream): in IARD about half the dialogues end on the recommender's goodbye. With a `first_word` row,
each dialogue draws whether the assistant opens it (`sample_opens`, its own stream): in IARD two
dialogues in three start with the recommender's greeting, and the user's first line answers it.

With an `assistant` row, each assistant line gets a target too (`sample_assistant`, its own stream),
ended the same way: for a scenario whose real corpus has a person on the other side as well (both
shipped ones: chitchat's second stranger, IARD's human recommender), so the assistant side's line
lengths are real too. A scenario whose assistant is the system under test leaves it out.

What it leaves out: tokens and characters; a row is an empirical histogram, not a smoothed law; an
assistant line's target does not depend on the line it answers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simgen.config import check_keys, load_yaml
from simgen.errors import ConfigError, did_you_mean

ANY = "*"  # the row for intents without their own
UNIT = "words"


def words(text: str) -> int:
    """The length of a line in words (whitespace-separated runs), as lengths are fitted and scored."""
    return len(text.split())


@dataclass(frozen=True)
class LengthModel:
    rows: Mapping[str, tuple[tuple[int, ...], tuple[float, ...]]]  # label -> (word counts, probabilities)
    source: str = "<lengths>"
    description: str = ""
    dialogues: tuple[tuple[int, ...], tuple[float, ...]] | None = None  # (user lines per dialogue, probabilities)
    reply: float | None = None  # the share of dialogues whose last line is the assistant's (`last_word`)
    assistant: tuple[tuple[int, ...], tuple[float, ...]] | None = None  # (words per assistant line, probabilities)
    opens: float | None = None  # the share of dialogues whose first line is the assistant's (`first_word`)

    def row(self, intent: str | None) -> tuple[tuple[int, ...], tuple[float, ...]]:
        return self.rows.get(intent or ANY) or self.rows[ANY]

    def sample(self, intent: str | None, rng: np.random.Generator) -> int:
        return _draw(self.row(intent), rng)

    def sample_turns(self, rng: np.random.Generator) -> int | None:
        """How many user lines a dialogue has (None without a `dialogues` row)."""
        return None if self.dialogues is None else _draw(self.dialogues, rng)

    def sample_assistant(self, rng: np.random.Generator) -> int | None:
        """An assistant line's target in words (None without an `assistant` row)."""
        return None if self.assistant is None else _draw(self.assistant, rng)

    def sample_reply(self, rng: np.random.Generator) -> bool:
        """Whether the assistant answers the user's closing line (False without a `last_word` row)."""
        return self.reply is not None and bool(rng.random() < self.reply)

    def sample_opens(self, rng: np.random.Generator) -> bool:
        """Whether the assistant opens the dialogue (False without a `first_word` row)."""
        return self.opens is not None and bool(rng.random() < self.opens)


def _draw(histogram: tuple[tuple[int, ...], tuple[float, ...]], rng: np.random.Generator) -> int:
    """One value of a (values, probabilities) histogram."""
    values, probs = histogram
    return int(values[int(rng.choice(len(values), p=np.array(probs)))])


def fit_lengths(lines: Iterable[tuple[str | None, str]], min_count: int = 30) -> dict[str, dict[int, int]]:
    """(label, text) pairs -> {label: {words: count}}: "*" over every line, plus a row per label
    with at least `min_count` lines (rarer labels draw from "*")."""
    by_label: dict[str, Counter] = {ANY: Counter()}
    for label, text in lines:
        n = words(text)
        if n == 0:
            continue
        by_label[ANY][n] += 1
        if label is not None:
            by_label.setdefault(label, Counter())[n] += 1
    if not by_label[ANY]:
        raise ValueError("no non-empty lines to fit lengths on")
    return {k: dict(sorted(c.items())) for k, c in sorted(by_label.items()) if k == ANY or sum(c.values()) >= min_count}


def dump_lengths(rows: Mapping[str, Mapping[int, int]], source: str, header: str = "",
                 dialogues: Mapping[int, int] | None = None, last_word: Mapping[str, int] | None = None,
                 assistant: Mapping[int, int] | None = None, first_word: Mapping[str, int] | None = None) -> str:
    """The YAML text of a length model (deterministic: sorted keys); `dialogues`: user lines per
    dialogue -> count; `last_word` and `first_word`: {"user": count, "assistant": count} of who
    says the last line and the first; `assistant`: words per assistant line -> count."""
    out = [f"# {line}" for line in header.splitlines()]
    out += [f"unit: {UNIT}", f"source: {source!r}", "lengths:"]
    for label in sorted(rows, key=lambda k: (k != ANY, k)):
        out.append(f"  {label!r}: {_flow(rows[label])}" if label == ANY else f"  {label}: {_flow(rows[label])}")
    if dialogues:
        out.append(f"dialogues: {_flow(dialogues)}")
    if last_word:
        out.append(f"last_word: {{user: {last_word.get('user', 0)}, assistant: {last_word.get('assistant', 0)}}}")
    if first_word:
        out.append(f"first_word: {{user: {first_word.get('user', 0)}, assistant: {first_word.get('assistant', 0)}}}")
    if assistant:
        out.append(f"assistant: {_flow(assistant)}")
    return "\n".join(out) + "\n"


def _flow(counts: Mapping[int, int]) -> str:
    """A histogram as a one-line YAML mapping, keys sorted: {1: 35, 2: 50}."""
    return "{" + ", ".join(f"{n}: {c}" for n, c in sorted(counts.items())) + "}"


def load_lengths(raw: Any, source: str, intents: tuple[str, ...]) -> LengthModel:
    """Validate a length model: a mapping, or the path of its own YAML file relative to `source`'s folder."""
    if isinstance(raw, str):
        path = Path(raw) if Path(raw).is_absolute() else Path(source).parent / raw
        if not path.is_file():
            raise ConfigError(f"{source}: lengths: file {str(path)!r} not found; give its path relative to the scenario file's folder.")
        return _parse(load_yaml(path), str(path), intents)
    return _parse(raw, f"{source}: lengths", intents)


def _parse(raw: Any, where: str, intents: tuple[str, ...]) -> LengthModel:
    check_keys(where, raw, {"unit", "source", "lengths", "dialogues", "last_word", "first_word", "assistant"}, required={"lengths"})
    if raw.get("unit", UNIT) != UNIT:
        raise ConfigError(f"{where}: unit: only {UNIT!r} is supported, got {raw['unit']!r}.")
    table = raw["lengths"]
    if not isinstance(table, dict) or ANY not in table:
        raise ConfigError(f"{where}: `lengths` must map labels to {{words: count}} and hold a {ANY!r} row for intents without their own.")
    rows = {}
    for label, counts in table.items():
        label = str(label)
        if label != ANY and label not in intents:
            raise ConfigError(f"{where}.lengths: {label!r} is not an intent of the scenario.{did_you_mean(label, list(intents))}")
        rows[label] = _histogram(f"{where}.lengths.{label}", counts, "word count")
    dialogues = _histogram(f"{where}.dialogues", raw["dialogues"], "number of user lines") if raw.get("dialogues") is not None else None
    assistant = _histogram(f"{where}.assistant", raw["assistant"], "word count") if raw.get("assistant") is not None else None
    return LengthModel(rows, where, str(raw.get("source", "")), dialogues, _assistant_share(where, "last_word", raw.get("last_word")),
                       assistant, _assistant_share(where, "first_word", raw.get("first_word")))


def _assistant_share(where: str, key: str, raw: Any) -> float | None:
    """`last_word` or `first_word`: {user: n, assistant: m} -> m / (n + m), the chance the assistant has that word."""
    if raw is None:
        return None
    check_keys(f"{where}.{key}", raw, {"user", "assistant"}, required={"user", "assistant"})
    counts = [raw["user"], raw["assistant"]]
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in counts) or sum(counts) <= 0:
        raise ConfigError(f"{where}.{key}: expected dialogue counts, {{user: n, assistant: m}} with n, m >= 0 and n + m > 0; got {raw!r}.")
    return counts[1] / sum(counts)


def _histogram(where: str, counts: Any, what: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """{positive int: positive weight} -> (values, probabilities), sorted by value."""
    if not isinstance(counts, dict) or not counts:
        raise ConfigError(f"{where}: expected a non-empty mapping {what} -> count, e.g. {{3: 10, 4: 7}}.")
    pairs = []
    for w, c in counts.items():
        if not (isinstance(w, int) and not isinstance(w, bool) and w > 0 and isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0):
            raise ConfigError(f"{where}: {w!r}: {c!r} is not a positive {what} with a positive weight.")
        pairs.append((w, float(c)))
    pairs.sort()
    total = sum(c for _, c in pairs)
    return tuple(w for w, _ in pairs), tuple(c / total for _, c in pairs)


# a sentence end: . ! ? or an ellipsis, then any closing quotes or brackets, then a space or the end
SENTENCE_END = re.compile(r"(?:[.!?]+|\u2026)[\"'\u2019\u201d)\]]*(?=\s|$)")
_NOT_AN_END = re.compile(r"(?:^|\s)(?:mr|mrs|ms|dr|st|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)  # "Mr." ends no sentence


def sentence_ends(text: str) -> list[int]:
    """The offsets just after each sentence end of `text` (an end at the very end of the text counts)."""
    return [m.end() for m in SENTENCE_END.finditer(text) if not _NOT_AN_END.search(text[:m.end()])]


def cut_to_target(text: str, target: int, finished: bool) -> str | None:
    """`text` cut at the sentence end whose word count is closest to `target` (a tie goes to the
    longer cut). `finished`: the writer ended the line itself, so its end counts as an end too.
    None when there is no end to cut at (an unfinished text without a sentence end)."""
    ends = sentence_ends(text)
    if finished and text and (not ends or ends[-1] < len(text.rstrip())):
        ends.append(len(text))
    if not ends:
        return None
    best = min(ends, key=lambda e: (abs(words(text[:e]) - target), -e))
    return text[:best].rstrip()


def target_reached(text: str, target: int) -> bool:
    """Whether a text still being written already holds its final cut: a sentence end at or after
    `target` words that is confirmed (followed by a space), so no later token can move the cut."""
    return any(e < len(text) and text[e].isspace() and words(text[:e]) >= target for e in sentence_ends(text))
