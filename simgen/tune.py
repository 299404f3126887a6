"""`simgen tune`: fine-tune the user simulator on a scenario's real dialogues.

The real corpus (any corpus `simgen.corpora` reads: a file, a folder of files, a registered name)
is turned into the simulator's own chats: for every user line of a real dialogue, the roles-flipped,
latent-conditioned chat that `simgen generate` would have sent before it (the same templates via
`generation.chats.user_chat`), and the line as the completion. Latents the corpus gives are used:
the intent (its labels mapped through the intent model's `aliases`; a corpus without labels gets them
from the model's `label_rules`) and the length (`target_words`
= the line's own word count). Latents it cannot give (the profile: who the real person was) are
sampled from the profile space, seeded by the dialogue id, so the persona block has the shape the
simulator will see; with `profile_match` > 1, the best of that many samples by what the dialogue's
user lines say (`matched_profile`: "I love horror" picks a persona who likes horror), so the persona
agrees with the lines it conditions; a variable the scenario says how people state (its `stated`
patterns: "i'm from (?P<value>...)") takes the value the person states in their own lines
(`stated_values`), even one outside the variable's declared values; a variable whose values come from a
corpus column (`values_from`, such as the chitchat-topic variant's `topic`) takes each dialogue's own value from that column
when the tuning corpus has it (`corpus_values`), so the simulator learns what the value means; `persona_weight` > 1 repeats the
train lines that state their matched persona. `answers` (a file, `read_answers`) adds examples in which
the other side asks about a persona variable and the line answers from the persona, a thing real corpora
rarely show. `rehearse` mixes in the user lines of a generated run
(`rehearsal`: a simulator's own lines from its persona, the guard against forgetting how to read it).
The loss is on the user line only (TRL's prompt-completion format).

Training is TRL's `SFTTrainer` with a LoRA adapter (peft) by default, or full fine-tuning
(`method="full"`). The train split feeds training, the validation split the validation loss; the
test split is never read. Long chats lose their oldest exchanges until they fit `max_length`
tokens (the persona and the current instruction always stay). `dtype="auto"` trains in mixed
precision where bf16 arithmetic is native (`training_precision`), and the loss projects only the
completion's positions through the LM head (`_completion_trainer`): 5.9x faster steps than TRL's
defaults in float32 on a 2-core AVX512-BF16 CPU (benchmarks/bench_tune.py).

The result is a folder:

    OUT/
      adapter_model.safetensors, adapter_config.json     (LoRA) or the full model (full)
      simgen_tune.json   the card: base model and its fingerprint, scenario, corpus and the sha256
                         of the examples, split sizes, settings, steps, train and validation losses,
                         training seconds (across interruptions) and the step it resumed from
      README.md          the same, for people
      trained_lines.npz  hashes of the train lines it learned and their 4-grams (`simgen.copies`), for the copy guard
      checkpoints/       while training (resume from here; removed when done)

`--model OUT` loads it (`simgen.models.resolve_model` merges an adapter into its base once and
caches the merged folder), and refuses an adapter whose base model is not the one it was trained on.

`--roles both` also trains on the real assistant lines (the assistant side's chat before each): one
adapter that writes both sides like the people in the corpus; `simgen generate` then uses it for
both when the scenario names it as its `simulator:`.

What it leaves out: no hyper-parameter search, no RL, no multi-GPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from simgen.corpora import Corpus, load_corpus, split_of
from simgen.errors import ConfigError, DataError, ModelError, RunError, did_you_mean
from simgen.models import TUNE_CARD, hub_lookups_off

if TYPE_CHECKING:
    from simgen.data import ProfileLatent

CARD = TUNE_CARD
ROLES = ("user", "assistant", "both")
REHEARSE_LINES = ("all", "persona")
PRECISIONS = ("auto", "mixed", "float32", "bfloat16")
MIN_DIALOGUES = {"train": 2, "validation": 1}


@dataclass(frozen=True)
class TuneConfig:
    """How `simgen tune` trains (TRL `SFTConfig` style: one field per setting, help text per field)."""

    method: str = field(default="lora", metadata={"help": "lora (a small adapter, peft) or full (every weight)", "choices": ("lora", "full")})
    roles: str = field(default="user", metadata={"help": "whose real lines to learn: user (the simulator), assistant, or both (one model for both sides)",
                                                 "choices": ROLES})
    epochs: float = field(default=1.0, metadata={"help": "passes over the train split"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps at most; 0 = as many as --epochs needs"})
    batch_size: int = field(default=8, metadata={"help": "examples (user lines) per optimizer step"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate (cosine decay after 5% warm-up)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (0: none; on CPU it costs ~14% of a step)"})
    lora_modules: str = field(default="all-linear", metadata={
        "help": "the layers the adapter trains: all-linear (every linear layer but the LM head), or a comma-separated list of "
                "module names (the embedded model's: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj); leaving "
                "q_proj,k_proj out keeps the base model's query and key projections"})
    max_length: int = field(default=512, metadata={"help": "tokens per example at most; older exchanges are dropped to fit"})
    max_dialogues: int = field(default=0, metadata={"help": "use at most this many train dialogues (seeded sample); 0 = all"})
    profile_match: int = field(default=32, metadata={"help": "profiles sampled per real dialogue; the one whose attribute values its user "
                                                             "lines mention most is used (1: the first sample, unmatched)"})
    wordiness: str = field(default="", metadata={"help": "a categorical profile variable whose values, in declared order, run from the "
                                                     "tersest user to the wordiest (movie-recommendation: verbosity): each real dialogue "
                                                     "gets the value its mean words per user line ranks it into, at the variable's own "
                                                     "shares, instead of a sampled one, so the simulator learns to follow it; empty: "
                                                     "sampled like the rest"})
    persona_weight: int = field(default=1, metadata={"help": "a train user line that states a value of its matched persona (`mentions`) is "
                                                             "repeated this many times in the train split (1: every line once); more "
                                                             "generated lines then state the persona"})
    ignore_stated: bool = field(default=False, metadata={"help": "do not set persona values from what each real person states (the profile "
                                                                 "variables' `stated` patterns); sample them like the rest"})
    rehearse: str = field(default="", metadata={
        "help": "a complete run folder of this scenario, written by the simulator whose persona the tuning should keep (e.g. the shipped "
                "one, at a seed whose profiles you do not measure on): its user lines join the train split as they were generated, "
                "with the chats simgen rebuilds from the run (rehearsal: the model keeps seeing what it wrote from its persona); "
                "empty: none"})
    rehearse_lines: str = field(default="all", metadata={"help": "which of the --rehearse run's user lines: all (every usable one) or "
                                                                 "persona (those that state a value of their dialogue's persona, `mentions`; "
                                                                 "few: 25 of 1,257 in a 100-dialogue chitchat run)",
                                                             "choices": REHEARSE_LINES})
    rehearse_share: float = field(default=0.2, metadata={"help": "the share of the train split's examples that are --rehearse lines, "
                                                                 "repeated (seeded shuffles) or cut to it"})
    answers: str = field(default="", metadata={
        "help": "a YAML file of questions about the persona and answer templates (profiles/movie-recommendation.answers.yaml "
                "shows the format): at its `share` of the train split's user lines, one more example in which the other side "
                "asks about a persona variable and the user answers from the persona, so the simulator learns to say who it is "
                "when asked; the validation split stays real lines only. Empty: none"})
    init: str = field(default="", metadata={
        "help": "a LoRA folder `simgen tune` wrote (or a packed one, e.g. profiles/chitchat.simulator) to go on training: "
                "its adapter's weights, rank and modules are the start (--lora-r, --lora-alpha, --lora-dropout and --lora-modules "
                "are then its own); its base model must be --model's. Empty: a fresh adapter"})
    eval_examples: int = field(default=200, metadata={"help": "validation examples scored (a seeded sample); 0 = all"})
    eval_every: int = field(default=0, metadata={"help": "validation loss every this many steps; 0 = at the end only"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every this many steps (what an interrupted run resumes from)"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, shuffling and initialisation"})
    dtype: str = field(default="auto", metadata={
        "help": "training precision: mixed (float32 weights, bfloat16 arithmetic), float32, bfloat16 (weights too), or auto: mixed on a GPU "
                "or a CPU with bf16 arithmetic (AVX512-BF16, AMX, Arm BF16; 2.5x faster steps on the embedded model), float32 elsewhere",
        "choices": PRECISIONS})

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ConfigError(f"method must be lora or full, got {self.method!r}.")
        if self.dtype not in PRECISIONS:
            raise ConfigError(f"dtype must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}.")
        if self.roles not in ROLES:
            raise ConfigError(f"roles must be one of {', '.join(ROLES)}, got {self.roles!r}.")
        if self.rehearse_lines not in REHEARSE_LINES:
            raise ConfigError(f"rehearse_lines must be one of {', '.join(REHEARSE_LINES)}, got {self.rehearse_lines!r}.")
        if not 0 <= self.rehearse_share < 1:
            raise ConfigError(f"rehearse_share must be in [0, 1), got {self.rehearse_share!r}.")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        for name in ("batch_size", "lora_r", "lora_alpha", "max_length", "save_every", "profile_match", "persona_weight"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not self.epochs > 0 or self.learning_rate <= 0:
            raise ConfigError("epochs and learning_rate must be positive.")
        if not [m for m in self.lora_modules.split(",") if m.strip()]:
            raise ConfigError(f"lora_modules must be all-linear or a comma-separated list of module names, got {self.lora_modules!r}.")
        if self.lora_modules.strip() != "all-linear" and self.method != "lora":
            raise ConfigError(f"lora_modules names an adapter's layers; --method {self.method} trains every weight. Drop --lora-modules, "
                              "or use --method lora.")
        if self.init and self.method != "lora":
            raise ConfigError(f"init continues a LoRA adapter; --method {self.method} trains every weight. Drop --init, or use --method lora.")


def init_adapter(spec: str, base: Any) -> dict[str, Any]:
    """The `--init` folder's card, checked: a LoRA folder `simgen tune` wrote (packed or not) on `base`
    (a ModelSource); what the new card records about it."""
    from simgen.models import fingerprint, read_card

    folder = Path(spec).expanduser()
    card = read_card(folder, f"--init {spec}", ConfigError)
    recorded = card["base_model"]
    if card.get("method") != "lora" or not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"--init {spec}: not a LoRA adapter (method {card.get('method')!r}); --init continues an adapter.")
    if recorded.get("fingerprint") != base.fingerprint:
        raise ModelError(f"--init {spec}: the adapter was trained on {recorded.get('id')!r} (fingerprint "
                         f"{str(recorded.get('fingerprint'))[:12]}), not on the base model here ({base.id}, fingerprint "
                         f"{base.fingerprint[:12]}). Pass that base as --model, or drop --init.")
    return {"path": str(folder), "fingerprint": fingerprint(folder), "steps": card.get("steps"),
            "examples_sha256": card.get("corpus", {}).get("examples_sha256"), "validation_loss": card.get("validation_loss"),
            "settings": card.get("settings")}


@dataclass(frozen=True)
class Answers:
    """`--answers FILE`, read and checked (`read_answers`): the lines that teach a simulator to answer from its persona.

    A real corpus rarely has the other side ask who the user is, and a persona sampled for a real person
    (`matched_profile`) holds facts their lines never state (a name, an age), so a tuned simulator learns
    that the persona block is noise and, asked its age, says the corpus's most common one. Each answer
    example is a real dialogue's chat up to one of its user lines, the other side's last line replaced by
    a question about one persona variable (`asked`), and a line that answers it from the dialogue's
    persona (`answers`: jinja2 templates over `value` and the profile's variables) as the completion."""

    path: str
    sha256: str
    share: float  # answer examples per real train user line (each line's chance of one)
    intent: str | None  # the intent latent the answer is written under (None: the real line's own)
    variables: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # (variable, questions, answer templates)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "share": self.share, "intent": self.intent,
                "variables": [name for name, _, _ in self.variables]}


def read_answers(path: str | Path, scenario: Any) -> Answers:
    """The `--answers` file `path` checked against `scenario` (a ConfigError names the file and field):

        share: 0.05            # in (0, 1]: each train user line's chance of one answer example beside it
        intent: ANS            # optional: one of the scenario's intents (default: the real line's)
        variables:
          age:                 # a categorical, int or list profile variable
            asked: ["and how old are you?", ...]            # what the other side says
            answers: ["I'm {{ value }}.", "{{ value }}"]     # jinja2 over `value` (a list's: the list) and the profile
    """
    from simgen import jinja
    from simgen.config import check_keys, load_yaml

    where = f"--answers {path}"
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}: no such file; pass a YAML file of questions and answers "
                          "(profiles/movie-recommendation.answers.yaml shows the format).")
    try:
        raw = load_yaml(file)
    except ConfigError as e:
        raise ConfigError(f"--answers {e}") from None
    check_keys(where, raw, {"share", "intent", "variables"}, required={"share", "variables"})
    share = raw["share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError(f"{where}: share: expected a number in (0, 1] (each train user line's chance of an answer example), got {share!r}.")
    intent = raw.get("intent")
    if intent is not None:
        names = list(scenario.intents.names)
        if intent not in names:
            raise ConfigError(f"{where}: intent: {intent!r} is not an intent of scenario {scenario.name!r} "
                              f"(those are: {', '.join(names)}).{did_you_mean(str(intent), names)}")
    spec = raw["variables"]
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: variables: expected a mapping of profile variable -> {{asked: [...], answers: [...]}}.")
    kinds = {v.name: v.type for v in scenario.profile.variables}
    out = []
    for name, entry in spec.items():
        at = f"{where}: variables.{name}"
        if name not in kinds:
            raise ConfigError(f"{at}: not a profile variable of scenario {scenario.name!r}.{did_you_mean(str(name), list(kinds))}")
        if kinds[name] not in ("categorical", "int", "list"):
            raise ConfigError(f"{at}: a {kinds[name]} variable is a trait, not a fact a person states; ask about a categorical, "
                              "int or list variable.")
        check_keys(at, entry, {"asked", "answers"}, required={"asked", "answers"})
        lists = []
        for key in ("asked", "answers"):
            items = entry[key]
            if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.strip() for t in items):
                raise ConfigError(f"{at}.{key}: expected a non-empty list of non-empty strings, got {items!r:.60}.")
            lists.append(tuple(items))
        for i, text in enumerate(lists[1]):
            jinja.check_template(f"{at}.answers[{i}]", text, ["value", *kinds], "A template reads `value` and the profile's variables.")
        out.append((name, lists[0], lists[1]))
    return Answers(str(file), hashlib.sha256(file.read_bytes()).hexdigest(), float(share), intent, tuple(out))


def answer_line(answers: Answers, profile: Any, rng: random.Random) -> tuple[str, str, str] | None:
    """(variable, question, answer) about one of `profile`'s values that `answers` covers, drawn with `rng`
    (None: the profile holds none of them, e.g. an empty list)."""
    from simgen import jinja

    usable = [(name, asked, said) for name, asked, said in answers.variables if profile.values.get(name) not in (None, [], ())]
    if not usable:
        return None
    name, asked, said = usable[rng.randrange(len(usable))]
    value = profile.values[name]
    text = jinja.template(rng.choice(said)).render(**profile.values, value=list(value) if isinstance(value, (list, tuple)) else value)
    return name, rng.choice(asked), " ".join(text.split())


# ---------------------------------------------------------------- data


def lora_targets(spec: str, lm: Any) -> str | list[str]:
    """`TuneConfig.lora_modules` for peft: "all-linear", or its names, each checked to name a linear layer
    of `lm` (else a `ConfigError` that lists the names `lm` has)."""
    import torch

    if spec.strip() == "all-linear":
        return "all-linear"
    names = [m.strip() for m in spec.split(",") if m.strip()]
    have = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"})
    unknown = [m for m in names if m not in have]
    if unknown:
        raise ConfigError(f"--lora-modules: {', '.join(map(repr, unknown))} is no linear layer of this model; "
                          f"use all-linear or names among {', '.join(have)}.")
    return names


def read_splits(spec: str | Path | Corpus, max_dialogues: int = 0, seed: int = 0) -> dict[str, Corpus]:
    """The corpus's train and validation splits, checked for what tuning needs (a DataError names the file)."""
    try:
        whole = load_corpus(spec)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - anything unreadable is the user's file
        raise DataError(f"{spec}: cannot read it as a corpus ({type(e).__name__}: {e}).") from None
    users = whole.turns.filter(pl.col("role") == "user")
    if users.height == 0:
        raise DataError(f"{whole.source}: the corpus has no user lines (roles found: {sorted(set(whole.turns['role']))}); "
                        "tuning learns the user side, so it needs dialogues with user turns.")
    counts = Counter(split_of(str(i)) for i in whole.turns["dialogue_id"].unique())
    for name, need in MIN_DIALOGUES.items():
        if counts[name] < need:
            raise DataError(f"{whole.source}: {whole.n_dialogues} dialogues give {counts[name]} in the {name} split "
                            f"(80/10/10 by a hash of the dialogue id); tuning needs at least {need}. Add dialogues.")
    splits = {"train": load_corpus(whole, split="train", max_dialogues=max_dialogues, seed=seed),
              "validation": load_corpus(whole, split="validation", max_dialogues=max(max_dialogues // 8, 2) if max_dialogues else 0, seed=seed)}
    return splits


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# a mention within this many words after one of these reads as negated ("I don't really like musicals")
_NEGATION = frozenset({"not", "no", "never", "nor", "don't", "doesn't", "didn't", "isn't", "wasn't", "can't", "cannot", "won't",
                       "hate", "hated", "dislike", "disliked", "avoid", "without"})
_NEGATION_REACH = 4


@functools.lru_cache(maxsize=4096)
def _stems(value: str) -> tuple[str, ...]:
    """The content words of a profile value, cut to 5 characters ("comedy" -> "comed", which "comedies" starts with)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return tuple(w[:5] for w in _WORD.findall(value.lower()) if w not in ENGLISH_STOP_WORDS and (len(w) >= 3 or w.isdigit()))


def _said(stems: tuple[str, ...], words: list[str]) -> tuple[bool, bool]:
    """(the text mentions the value plainly, the text mentions it negated): every stem begins some word, and
    the first stem's occurrences are plain or follow a negation within `_NEGATION_REACH` words."""
    if not stems or not all(any(w.startswith(s) for w in words) for s in stems):
        return False, False
    at = [i for i, w in enumerate(words) if w.startswith(stems[0])]
    negated = [any(w in _NEGATION for w in words[max(0, i - _NEGATION_REACH):i]) for i in at]
    return not all(negated), any(negated)


def mentions(profile: ProfileLatent, text: str, complements: frozenset[str] = frozenset()) -> int:
    """How many of `profile`'s stated values (`consistency.metrics.attribute_values`: every categorical, list
    and integer value, not float traits) `text` mentions: every content word of the value begins a word of the
    text. A variable in `complements` (one declared with `exclude`, such as disliked_genres against
    liked_genres) counts its values where the text says them negated; any other, where it says them plainly."""
    return _mentions(profile, _WORD.findall(text.lower()), complements)


def _mentions(profile: ProfileLatent, words: list[str], complements: frozenset[str]) -> int:
    """`mentions` on a text already split into lower-case `words` (one split for all of a dialogue's candidates)."""
    from simgen.consistency.metrics import attribute_values

    count = 0
    for name, values in attribute_values(profile.values).items():
        for value in values:
            plain, negated = _said(_stems(value), words)
            count += negated if name in complements else plain
    return count


def complement_variables(scenario: Any) -> frozenset[str]:
    """The profile variables declared as another's complement (`exclude`: disliked_genres excludes liked_genres)."""
    return frozenset(v.name for v in scenario.profile.variables
                     if any(d.exclude for d in v.distributions))


def matched_profile(scenario: Any, seed: int, key: int, user_text: str, k: int) -> ProfileLatent:
    """Of `k` profiles sampled for one real dialogue, the one whose values its user lines mention most
    (`mentions`; the first sample on ties, so k=1 is the plain sample). A real corpus does not say who the
    person was, but what they say about themselves ("I love horror movies", "not a fan of musicals") says
    part of it: a persona that agrees with the lines teaches the simulator to use its persona, where an
    unrelated one teaches it to ignore it."""
    from simgen import rng

    draws = [scenario.profile.sample(rng.generator(seed, key, rng.PROFILE, j)) for j in range(k)]
    if k == 1:
        return draws[0]
    complements, words = complement_variables(scenario), _WORD.findall(user_text.lower())
    scores = [_mentions(p, words, complements) for p in draws]
    return draws[scores.index(max(scores))]


def stated_values(scenario: Any, lines: list[str]) -> dict[str, Any]:
    """profile variable -> the value a real person states in their `lines`, by the variable's `stated` patterns
    (`profiles`: "i'm from (?P<value>[a-z ]+)"): the first value found for a categorical one, the first in its
    range for an int, the distinct values found (at most the variable's largest k) for a list. A value keeps
    the person's spelling with its spaces collapsed; one of stop words alone ("there", "it") says nothing and is skipped.
    What the person says beats a sampled value even outside the declared ones: a persona that matches
    the line teaches the simulator to say its persona, one that contradicts it teaches it to ignore it."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    out: dict[str, Any] = {}
    for var in scenario.profile.variables:
        if not var.stated:
            continue
        found: list[str] = []
        seen: set[str] = set()  # found, lower-cased
        for line in lines:
            for rx in var.stated:
                for m in rx.finditer(line):
                    value = " ".join((m.group("value") or "").split())
                    key = value.lower()
                    if value and key not in seen and not set(key.split()) <= ENGLISH_STOP_WORDS:
                        found.append(value)
                        seen.add(key)
        dists = var.distributions
        if var.type == "int":
            lows = [d.low for d in dists if d.low is not None]
            highs = [d.high for d in dists if d.high is not None]
            numbers = [int(v) for v in found if v.isdigit() and (not lows or int(v) >= min(lows)) and (not highs or int(v) <= max(highs))]
            if numbers:
                out[var.name] = numbers[0]
        elif var.type == "list":
            if found:
                out[var.name] = found[:max(d.k[1] for d in dists)]
        elif found:
            out[var.name] = found[0]
    return out


def corpus_values(scenario: Any, turns: Any) -> dict[str, dict[str, str]]:
    """dialogue id -> {profile variable: its value in the corpus}, for each variable whose values come from a
    corpus column (`values_from`) that `turns` (a corpus's turns frame) has, read as `values_from` reads them
    (`simgen.corpora.dialogue_values`). A dialogue without one is left out (its value is sampled, as for any
    latent the corpus cannot give)."""
    from simgen.corpora import dialogue_values

    out: dict[str, dict[str, str]] = {}
    for var in scenario.profile.variables:
        source = var.values_from
        if source is None or source.column not in turns.columns:
            continue
        for dialogue_id, value in dialogue_values(turns, source.column).iter_rows():
            out.setdefault(dialogue_id, {})[var.name] = value
    return out


def dialogue_key(dialogue_id: str) -> int:
    """The seed key of a real dialogue's sampled persona (`matched_profile`): its id's hash, so a dialogue keeps its persona
    whatever else is in the corpus."""
    return int.from_bytes(hashlib.sha256(dialogue_id.encode()).digest()[:4], "big")


def wordiness_values(scenario: Any, name: str, dialogues: list[Any]) -> dict[str, Any]:
    """dialogue id -> the value of the categorical profile variable `name` that the dialogue's
    wordiness earns: dialogues ranked by their mean words per user line, cut at the variable's
    cumulative weights (its values in declared order, tersest first). So the values keep the shares
    the profile space samples them at, and each real dialogue's value says what its person did."""
    import numpy as np

    from simgen.lengths import words

    var = next((v for v in scenario.profile.variables if v.name == name), None)
    if var is None or var.type != "categorical" or var.given is not None or var.base is None:
        names = [v.name for v in scenario.profile.variables if v.type == "categorical" and v.given is None]
        raise ConfigError(f"wordiness: {name!r} is not an unconditional categorical variable of the scenario's profile "
                          f"(those are: {', '.join(names) or 'none'}).{did_you_mean(name, names)}")
    means = []
    for d in dialogues:
        lengths = [words(t.text) for t in d.turns if t.role == "user" and t.text.strip()]
        if lengths:
            means.append((sum(lengths) / len(lengths), d.dialogue_id))
    means.sort()
    cumulative = np.cumsum(var.base.weights)
    last = len(var.base.values) - 1
    return {key: var.base.values[min(int(np.searchsorted(cumulative, (rank + 0.5) / len(means))), last)]
            for rank, (_, key) in enumerate(means)}


def persona_weighted(rows: list[dict[str, Any]], weight: int) -> list[dict[str, Any]]:
    """`rows` with each row that `states_persona` repeated `weight` times, the copies next to it (the trainer shuffles)."""
    return [r for r in rows for _ in range(weight if r["states_persona"] else 1)]


def examples(scenario: Any, corpus: Corpus, tokenizer: Any, max_length: int, seed: int, max_turns: int,
             roles: str = "user", profile_match: int = 1, wordiness: str = "", stated: bool = True, progress: str = "",
             answers: Answers | None = None) -> list[dict[str, Any]]:
    """(real line) -> {"prompt": the chat simgen would send before it, "completion": [the line], "role": its side}.

    User lines get the user side's chat (persona, intent and length from the corpus, profile sampled:
    with `profile_match` > 1, the best of that many samples by `mentions` of the dialogue's user lines);
    with `roles` "assistant" or "both", assistant lines get the assistant side's chat. `states_persona`:
    a user line that mentions a value of its dialogue's persona (what `TuneConfig.persona_weight` repeats).
    `wordiness`: a profile variable set from each dialogue's own wordiness (`wordiness_values`), not sampled.
    `stated`: variables the person states in their lines take that value (`stated_values`; each row's
    `stated` lists them), and the persona's backstory is rendered again from the values set. Variables
    whose values come from a column the corpus has take the dialogue's value (`corpus_values`), always.
    `answers` (`read_answers`): beside a user line, at the file's share, one more row whose chat has the
    other side ask about a persona value instead of its last line, and the persona's answer as the line
    (`answers` names the variable; None on the real rows).
    `progress`: a bar over the dialogues with this label (empty: none). A whole corpus takes minutes:
    every line's chat is tokenized to fit (chitchat-dataset's train split, 3,198 dialogues and 108k lines,
    took about 8 minutes on 2 cores before the first training step).
    """
    from tqdm import tqdm

    from simgen.data import Turn, frame_to_dialogues
    from simgen.generation.chats import assistant_chat, user_chat
    from simgen.generation.plan import DialogueJob
    from simgen.lengths import words

    intents, complements = scenario.intents, complement_variables(scenario)
    out = []
    dialogues = list(frame_to_dialogues(intents.label_lines(corpus.turns)))
    earned = wordiness_values(scenario, wordiness, dialogues) if wordiness else {}
    given = corpus_values(scenario, corpus.turns)
    for n, d in enumerate(tqdm(dialogues, desc=progress, unit="dialogue", disable=not progress, leave=False)):
        turns = [Turn(t.turn, t.role, t.text, t.intent if t.role == "user" else None) for t in d.turns if t.text.strip()]
        users = [t for t in turns if t.role == "user"]
        if not users:
            continue
        profile = matched_profile(scenario, seed, dialogue_key(d.dialogue_id), " ".join(t.text for t in users), profile_match)
        said = stated_values(scenario, [t.text for t in users]) if stated else {}
        named = sorted(said)
        if d.dialogue_id in earned:
            said[wordiness] = earned[d.dialogue_id]
        said.update(given.get(d.dialogue_id, {}))
        if said:
            profile = scenario.profile.replace(profile, said)
        job = DialogueJob(n, profile, tuple(t.intent for t in users), tuple(words(t.text) for t in users))
        horizon = max(max_turns, len(users))
        k = 0
        for j, line in enumerate(turns):
            if line.role == "user":
                chat = user_chat(scenario, job, turns, k, horizon) if roles != "assistant" else None
                k += 1
            else:
                chat = assistant_chat(scenario, profile, turns[:j], horizon) if roles != "user" else None
            if chat is None:
                continue
            completion = [{"role": "assistant", "content": line.text}]
            chat = _fit(chat, completion, tokenizer, max_length)
            if chat is not None:
                out.append({"prompt": chat, "completion": completion, "dialogue_id": d.dialogue_id, "role": line.role,
                            "user_turn": k - 1 if line.role == "user" else None, "stated": named,
                            "states_persona": line.role == "user" and mentions(profile, line.text, complements) > 0, "answers": None})
            if answers is not None and line.role == "user":
                row = _answer_row(scenario, job, turns[:j], k - 1, horizon, answers, f"answers/{seed}/{d.dialogue_id}/{k - 1}")
                if row is not None and (fitted := _fit(row[0], row[1], tokenizer, max_length)) is not None:
                    out.append({"prompt": fitted, "completion": row[1], "dialogue_id": d.dialogue_id, "role": "user", "user_turn": k - 1,
                                "stated": named, "states_persona": False, "answers": row[2]})
    return out


def _answer_row(scenario: Any, job: Any, before: list[Any], k: int, horizon: int, answers: Answers,
                key: str) -> tuple[list[dict], list[dict], str] | None:
    """(chat, completion, variable) of an answer example at user line `k` (`before`: the real turns before
    it), drawn with the string seed `key`; None when the draw says none here (the file's `share`)."""
    from dataclasses import replace

    from simgen.data import Turn
    from simgen.generation.chats import user_chat

    rng = random.Random(key)
    if rng.random() >= answers.share:
        return None
    drawn = answer_line(answers, job.profile, rng)
    if drawn is None:
        return None
    variable, question, said = drawn
    history = before[:-1] if before and before[-1].role == "assistant" else before
    asked = Turn(history[-1].turn + 1 if history else 0, "assistant", question)
    intents = list(job.intents)
    targets = list(job.target_words)
    if answers.intent is not None:
        intents[k] = answers.intent
    if k < len(targets):
        targets[k] = len(said.split())
    changed = replace(job, intents=tuple(intents), target_words=tuple(targets))
    return user_chat(scenario, changed, [*history, asked], k, horizon), [{"role": "assistant", "content": said}], variable


def rehearsal_run(scenario: Any, run_path: str | Path) -> Any:
    """The complete run `run_path`, checked to be of `scenario` with its files unchanged (else a
    `RunError`, `ConfigError` or `ScenarioChanged` that names the folder): what `--rehearse` reads."""
    from simgen.generation.run import load_run
    from simgen.scenario import load_recorded

    run = load_run(run_path)
    where = f"--rehearse {run.path}"
    recorded = load_recorded(run.manifest.get("scenario") or {}, where, "the rebuilt chats would not be what its simulator saw")
    if recorded.fingerprint != scenario.fingerprint:
        raise ConfigError(f"{where}: a run of scenario {recorded.name!r}, not {scenario.name!r}; pass a run generated with "
                          f"--scenario {scenario.name}.")
    return run


def rehearsal(scenario: Any, run: Any, tokenizer: Any, max_length: int, lines: str = "all") -> tuple[list[dict[str, Any]], dict]:
    """The user lines of the generated run `run` (a folder, checked by `rehearsal_run`, or the `Run` it
    returned) as training rows (`examples`' shape, `dialogue_id` "RUN-FOLDER-NAME/ID"), each with the
    chat simgen rebuilds for it (`export.rl.Chats`: what the run's simulator saw), and a summary for
    the card. `lines` "all" takes every usable line (`export.rl.usable_turns`), "persona" those that
    state a value of their dialogue's persona (`mentions`).
    """
    from simgen.data import frame_to_dialogues
    from simgen.export.rl import Chats
    from simgen.generation.run import Run

    run = run if isinstance(run, Run) else rehearsal_run(scenario, run)
    where = f"--rehearse {run.path}"
    chats, complements = Chats(scenario, run.max_turns), complement_variables(scenario)
    rows, seen = [], 0
    for d in frame_to_dialogues(run.turns.sort("dialogue_id", "turn")):
        for p in chats.prompts(d, "user"):
            if not p["completion"].strip():
                continue
            seen += 1
            stating = mentions(d.profile, p["completion"], complements) > 0
            if lines == "persona" and not stating:
                continue
            completion = [{"role": "assistant", "content": p["completion"]}]
            chat = _fit(p["prompt"], completion, tokenizer, max_length)
            if chat is not None:
                rows.append({"prompt": chat, "completion": completion, "dialogue_id": f"{run.path.name}/{d.dialogue_id}", "role": "user",
                             "user_turn": p["user_turn"], "stated": [], "states_persona": stating})
    if not rows:
        raise DataError(f"{where}: none of its {seen} user lines {'states its persona' if lines == 'persona' else 'is usable'} "
                        f"within --max-length {max_length} tokens; pass another run{', or --rehearse-lines all' if lines == 'persona' else ''}.")
    summary = {"run": str(run.path), "simulator": (run.manifest.get("backend") or {}).get("user"), "seed": run.manifest.get("seed"),
               "lines": lines, "user_lines": seen, "rows": len(rows), "dialogues": len({r["dialogue_id"] for r in rows})}
    return rows, summary


def rehearsal_mix(rows: list[dict[str, Any]], n_real: int, share: float, seed: int) -> list[dict[str, Any]]:
    """`rows` repeated in seeded shuffles (or cut) to `share` of a train split of `n_real` real examples plus them."""
    if not rows or share <= 0:
        return []
    n, rng, out = round(share / (1 - share) * n_real), random.Random(seed), []
    while len(out) < n:
        cycle = list(rows)
        rng.shuffle(cycle)
        out += cycle
    return out[:n]


def _fit(chat: list[dict], completion: list[dict], tokenizer: Any, max_length: int) -> list[dict] | None:
    """`chat` without its fewest oldest exchanges such that chat + completion fit `max_length` tokens
    (None: never); `generation.chats.fit_exchanges`, the rule a tuned side's `context` follows too."""
    from simgen.generation.chats import fit_exchanges
    from simgen.models import chat_token_ids

    return fit_exchanges(chat, lambda c: len(chat_token_ids(tokenizer, c + completion)), max_length)


def examples_digest(rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r["prompt"], r["completion"]], sort_keys=True).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- training


def training_precision(requested: str) -> str:
    """What `TuneConfig.dtype` means on this machine: "auto" is "mixed" (float32 weights and optimizer,
    bfloat16 matmuls under autocast) where bf16 arithmetic is native (a GPU that has it, or a CPU with
    AVX512-BF16, AMX or Arm BF16: `simgen.models.native_bf16_cpu`), and "float32" elsewhere, where
    bf16 is emulated and slower than float32. Any other value is taken as it is."""
    if requested != "auto":
        return requested
    import torch

    from simgen.models import native_bf16_cpu

    if torch.cuda.is_available():
        return "mixed" if torch.cuda.is_bf16_supported() else "float32"
    return "mixed" if native_bf16_cpu() else "float32"


@hub_lookups_off()  # peft saves (checkpoints, the folder) without asking the Hub about the base model
def tune(scenario_name: str, corpus: str | Path, out: str | Path, *, model: str | None = None, config: TuneConfig | None = None,
         progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune `model` (None: the embedded SmolLM2) as `scenario_name`'s user simulator on `corpus`;
    write the folder `out` and return its card. An interrupted call resumes from `out/checkpoints`."""
    import torch
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from simgen.models import load_causal_lm, resolve_model
    from simgen.scenario import load_scenario

    cfg = config or TuneConfig()
    out = Path(out)
    if (out / CARD).is_file():
        raise RunError(f"{out}: already holds a tuned simulator ({CARD}); pass another --out, or delete it to train again.")
    scenario = load_scenario(scenario_name)
    if cfg.wordiness:
        wordiness_values(scenario, cfg.wordiness, [])  # a bad name fails here, before the model loads
    rehearse = rehearsal_run(scenario, cfg.rehearse) if cfg.rehearse else None  # a bad run fails here, before the model loads
    answers = read_answers(cfg.answers, scenario) if cfg.answers else None  # and a bad --answers file
    source = resolve_model(model)
    start = init_adapter(cfg.init, source) if cfg.init else None  # a bad --init fails here, before the model loads
    splits = read_splits(corpus, cfg.max_dialogues, cfg.seed)
    precision = training_precision(cfg.dtype)
    lm, tokenizer = load_causal_lm(source, dtype="bfloat16" if precision == "bfloat16" else "float32")
    targets = lora_targets(cfg.lora_modules, lm) if cfg.method == "lora" and start is None else None  # before the examples' minutes
    max_turns = scenario.max_turns
    data = {name: examples(scenario, c, tokenizer, cfg.max_length, cfg.seed, max_turns, cfg.roles, cfg.profile_match, cfg.wordiness,
                            not cfg.ignore_stated, progress=f"{name} examples" if progress else "",
                            answers=answers if name == "train" else None)
            for name, c in splits.items()}
    if cfg.eval_examples and len(data["validation"]) > cfg.eval_examples:  # bound the cost of each validation pass
        keep = sorted(random.Random(cfg.seed).sample(range(len(data["validation"])), cfg.eval_examples))
        data["validation"] = [data["validation"][i] for i in keep]
    if not data["train"]:
        raise DataError(f"{corpus}: no train example fits --max-length {cfg.max_length} tokens; raise it.")
    rehearsed, rehearsed_from = (rehearsal(scenario, rehearse, tokenizer, cfg.max_length, cfg.rehearse_lines)
                                 if rehearse is not None else ([], None))
    digest = examples_digest(data["train"] + data["validation"] + rehearsed)
    stating = sum(r["states_persona"] for r in data["train"])
    answered = Counter(r["answers"] for r in data["train"] if r.get("answers"))
    stated = Counter(name for d in {r["dialogue_id"]: r["stated"] for r in data["train"]}.values() for name in d)
    real = persona_weighted(data["train"], cfg.persona_weight)
    mixed = rehearsal_mix(rehearsed, len(real), cfg.rehearse_share, cfg.seed)
    repeated = real + mixed
    if rehearsed_from:
        rehearsed_from["train_examples"] = len(mixed)
        log(f"rehearsal: {len(rehearsed)} lines of {cfg.rehearse} fill {len(mixed)} of {len(repeated)} train examples "
            f"({len(mixed) / len(rehearsed):.1f} times each)")
    settings = asdict(cfg)
    state = {"scenario": scenario.fingerprint, "base": source.fingerprint, "examples": digest, "settings": settings, "precision": precision,
             "init": start and start["fingerprint"]}
    ckpt = out / "checkpoints"
    stamp = ckpt / "simgen_state.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != state:
        log(f"{ckpt}: checkpoints from other data or settings; starting over.")
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(state, indent=2))

    lm.train()
    if start is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, start["path"], is_trainable=True)  # a bf16 (packed) adapter is cast to the model's dtype
    elif cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                                           task_type="CAUSAL_LM"))
    steps_per_epoch = math.ceil(len(repeated) / cfg.batch_size)
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    with warnings.catch_warnings():  # transformers >= 5.2x renames gradient_checkpointing; TRL still sets the old name's default
        warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
        args = SFTConfig(
            output_dir=str(ckpt), max_steps=max_steps, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, max_steps // 20), weight_decay=0.0,
            logging_steps=max(1, min(10, max_steps // 10)), save_steps=min(cfg.save_every, max_steps), save_total_limit=1,
            eval_strategy="steps" if cfg.eval_every else "no", eval_steps=cfg.eval_every or None,
            seed=cfg.seed, data_seed=cfg.seed, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=not progress,
            completion_only_loss=True, max_length=None, packing=False, dataloader_num_workers=0, bf16=precision != "float32",
            gradient_checkpointing=False,  # TRL's default runs each layer again in the backward pass, for memory a small model does not need
        )
    columns = ["prompt", "completion"]
    train = Dataset.from_list([{k: r[k] for k in columns} for r in repeated])
    valid = Dataset.from_list([{k: r[k] for k in columns} for r in data["validation"]])
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        trainer = _completion_trainer(SFTTrainer)(model=lm, args=args, train_dataset=train, eval_dataset=valid, processing_class=tokenizer)
        clock = _training_clock(ckpt)
        trainer.add_callback(clock)
        resume = clock.resumed_from is not None  # the checkpoint the Trainer's resume_from_checkpoint=True picks
        before_file = ckpt / "base_validation_loss.json"
        if not before_file.is_file():  # the base model (and the --init adapter) on the same validation examples, for reference
            at_start = trainer.evaluate()["eval_loss"]
            if start is not None:
                with lm.disable_adapter():
                    at_base = trainer.evaluate()["eval_loss"]
            else:
                at_base = at_start
            before_file.write_text(json.dumps({"base": at_base, "start": at_start}))
        before = json.loads(before_file.read_text())
        if resume:
            log(f"resuming from {ckpt}")
        clock.start()
        result = trainer.train(resume_from_checkpoint=True if resume else None)
        seconds = clock.elapsed()
        final = trainer.evaluate()["eval_loss"]
    finally:
        hf_logging.set_verbosity(verbosity)
    history = [{k: v for k, v in h.items() if k in ("step", "loss", "eval_loss", "learning_rate")} for h in trainer.state.log_history]
    losses = [h["loss"] for h in history if "loss" in h]

    tmp = out.with_name(f".{out.name}.writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lm.save_pretrained(tmp)
    if cfg.method == "full":
        tokenizer.save_pretrained(tmp)
    card = {
        "simgen_tune": 1,
        "base_model": source.describe(),
        "method": cfg.method,
        "roles": cfg.roles,
        "scenario": {"name": scenario.name, "fingerprint": scenario.fingerprint},
        "corpus": {"source": splits["train"].source, "examples_sha256": digest,
                   "dialogues": {k: c.n_dialogues for k, c in splits.items()}, "examples": {k: len(v) for k, v in data.items()},
                   "lines": {k: dict(Counter(r["role"] for r in v if not r.get("answers"))) for k, v in data.items()},
                   "train_lines_stating_persona": stating, "train_examples_per_epoch": len(repeated),
                   "train_dialogues_stating": dict(sorted(stated.items())),
                   "train_dialogues_given": {name: count for name, count in sorted(Counter(
                       name for values in corpus_values(scenario, splits["train"].turns).values() for name in values).items())},
                   "rehearsal": rehearsed_from,
                   "answers": answers and answers.describe() | {"train_examples": sum(answered.values()),
                                                                 "by_variable": dict(sorted(answered.items()))},
                   "split": "80/10/10 by sha256 of the dialogue id (simgen.corpora.split_of); test never read"},
        "settings": settings, "precision": precision,
        "steps": int(result.global_step), "seconds": round(clock.before + seconds, 1),
        "resumed_from_step": clock.resumed_from, "seconds_this_run": round(seconds, 1),
        "train_loss": {"first": losses[0] if losses else None, "last": losses[-1] if losses else None, "mean": result.training_loss},
        "validation_loss": final, "base_validation_loss": before["base"],
        "init": start and start | {"validation_loss_here": before["start"]},
        "history": history,
    }
    (tmp / CARD).write_text(json.dumps(card, indent=2))
    (tmp / "README.md").write_text(_readme(card))
    write_copy_index(tmp, splits["train"], cfg.roles)
    if out.exists():
        shutil.rmtree(ckpt, ignore_errors=True)
        for leftover in out.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        out.rmdir()
    tmp.rename(out)
    return card


def _completion_trainer(base: type) -> type:
    """TRL's `SFTTrainer` (passed as `base`, imported lazily), whose training loss sends only the completion's
    positions through the LM head.

    TRL's fused LM head scores every position of the batch where Triton does not run (a CPU): fixed tile
    shapes for compilers, at the cost of projecting the whole prompt through a 49,152-token head, twice
    in the backward pass, to then mask it out. On the embedded model that was 46% of a CPU step (py-spy,
    batch 8 of up to 256 tokens), for a loss over the user line alone, a tenth of the positions. Here the
    backbone runs under the trainer's autocast, the completion's hidden states are projected, and the loss
    is TRL's: the summed negative log-likelihood over the batch's completion tokens. Validation (and any
    model whose head scales or caps its logits) goes through TRL's own `compute_loss`; a test checks
    that the two losses agree."""

    class CompletionSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN202 - Trainer's signature
            import torch
            import torch.nn.functional as F

            inner = self.accelerator.unwrap_model(model)
            inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
            text = inner.config.get_text_config()
            plain = not any(getattr(text, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling",
                                                              "output_multiplier", "lm_head_multiplier"))
            if return_outputs or not model.training or not plain:
                return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            feed = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            with self.accelerator.autocast():
                hidden = inner.get_decoder()(**feed, use_cache=False).last_hidden_state[:, :-1]
                logits = inner.get_output_embeddings()(hidden[mask])
            total = F.cross_entropy(logits.float(), labels[mask], reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
            return total / torch.as_tensor(count, device=total.device).clamp(min=1)

    return CompletionSFTTrainer


def _training_clock(ckpt: Path):
    """A Trainer callback that keeps training time across interruptions: each checkpoint records the
    seconds trained up to it (`simgen_seconds.json`), and a resumed run starts from the record of the
    checkpoint it resumes. So the card's `seconds` is the time of the steps that were kept (work done
    after the last checkpoint of an interrupted run is lost and not counted; a checkpoint written
    before this record existed counts as 0)."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    class TrainingClock(TrainerCallback):
        FILE = "simgen_seconds.json"

        def __init__(self) -> None:
            last = get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None
            record = Path(last) / self.FILE if last else None
            self.resumed_from: int | None = int(Path(last).name.split("-")[-1]) if last else None
            self.before = float(json.loads(record.read_text())["seconds"]) if record and record.is_file() else 0.0
            self.start()

        def start(self) -> None:
            self.t0 = time.perf_counter()

        def elapsed(self) -> float:
            return time.perf_counter() - self.t0

        def on_save(self, args, state, control, **kwargs):  # called once checkpoint-N is on disk
            folder = ckpt / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / self.FILE).write_text(json.dumps({"step": state.global_step, "seconds": self.before + self.elapsed()}))
            return control

    return TrainingClock()


def write_copy_index(folder: str | Path, train: Corpus, roles: str) -> Path:
    """`folder/trained_lines.npz`: the hashed lines and 4-grams (`simgen.copies`) of `train`'s lines of
    the side(s) `roles` learned, so `simgen generate`'s redraws can refuse a line that near-copies one
    (`--copy-guard`) where the corpus itself is not at hand."""
    from simgen.copies import COPY_INDEX, CopyIndex

    sides = ("user", "assistant") if roles == "both" else (roles,)
    lines = train.turns.filter(pl.col("role").is_in(sides))["text"].to_list()
    path = Path(folder) / COPY_INDEX
    CopyIndex.from_lines(lines).save(path)
    return path


def _readme(card: dict[str, Any]) -> str:
    c, s = card["corpus"], card["settings"]
    return (f"# simgen tuned simulator ({card.get('roles', 'user')} side{'s' if card.get('roles') == 'both' else ''}): {card['scenario']['name']}\n\n"
            f"- base model: {card['base_model']['id']} (fingerprint `{card['base_model']['fingerprint'][:16]}`)\n"
            f"- method: {card['method']}; {card['steps']} steps of {s['batch_size']} examples, lr {s['learning_rate']}, "
            f"max length {s['max_length']} tokens\n"
            f"- data: {c['source']}, train split {c['dialogues']['train']} dialogues / {c['examples']['train']} examples, "
            f"validation {c['dialogues']['validation']} / {c['examples']['validation']}; examples sha256 `{c['examples_sha256'][:16]}`; "
            f"the test split was never read\n"
            + (f"- rehearsal: {r['train_examples']} train examples from {r['rows']} generated user lines ({r['lines']}) of the run "
               f"{r['run']} (seed {r['seed']})\n" if (r := c.get("rehearsal")) else "")
            + (f"- answers: {a['train_examples']} train examples in which the user answers a question about its persona "
               f"({', '.join(f'{k} {v}' for k, v in a['by_variable'].items())}), from {a['path']} (sha256 `{a['sha256'][:16]}`)\n"
               if (a := c.get("answers")) else "")
            + (f"- went on from the adapter {i['path']} ({i['steps']} steps; validation loss here {i['validation_loss_here']}): "
               f"its card is `init` in simgen_tune.json\n" if (i := card.get("init")) else "")
            + f"- train loss {card['train_loss']['first']} -> {card['train_loss']['last']}; validation loss {card['validation_loss']}\n"
            f"- {card['seconds']:.0f} s of training"
            + (f" (resumed from step {card['resumed_from_step']})" if card.get("resumed_from_step") else "") + "\n\n"
            "Use it: `simgen generate --model THIS_FOLDER ...`. Rebuild it: `simgen tune` with the settings in simgen_tune.json.\n")
