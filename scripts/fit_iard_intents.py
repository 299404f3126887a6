"""Fit the default turn-level intent model and line lengths of the `movie-recommendation` scenario from IARD.

Only the `train` split is read (simgen.corpora.split_of on the conversation id: 265 of the 336
dialogues); `validation` and `test` stay unseen for model selection and benchmarks. It writes two
files: `profiles/movie-recommendation.intents.yaml` (below) and
`profiles/movie-recommendation.lengths.yaml` (words per user line, per primary intent, the closing
turns counted as BYE; simgen.lengths reads it). The intents file also records `aliases`: the raw
labels that were renamed or merged, so a reader of raw IARD labels (intent adherence in
`simgen realism`) maps them onto the model's intents.

Reads the two annotated IARD files (../shared/data/iard/: 77 gold + 259 partially annotated
ReDial dialogues; see NOTICE.md there), turns each dialogue into a chain of user intents, and
writes `profiles/movie-recommendation.intents.yaml`: the intent inventory with descriptions, the
start distribution (intent of the first user turn) and a first-order transition matrix between
consecutive user turns, plus the fixed profile `modifiers` block. Only derived counts and
probabilities are written; no dialogue text ever leaves the data folder.

What it leaves out: no conditioning on the assistant's turns or on the profile (the loader applies
`modifiers`), no slot values, no higher-order history.

What the annotations look like (counts this script saw, default settings):
- 336 dialogues (77 gold, 259 partial), 4,583 utterances, 2,261 of them USER turns; speakers always
  alternate, and 224 dialogues (48 gold, 176 partial) open with the AGENT.
- USER act labels (all acts, not only primary): OTH 704, SEE 478, ACC 427, IQU 292, PRO 278,
  REJ 260, INQ 148, CRI-F 147, CRI-A 121, ANS 111, NRE 97, CON 70, END 58, ASK 54, CRI-C 35,
  REF 34, STO 19. 935 user turns carry 2-5 acts.
- `BYE` never occurs. The gold file marks closings with `END` (58 times, 56 of them in the last
  user turn); the partial file has no `END` and labels closings `OTH` (129 of its 259 dialogues
  end on an OTH-only user turn such as a thank-you or goodbye).
- `ASK` (asking the assistant whether it has seen or liked a film) is used but is not in
  redial_v1_intent_schema.yaml.
- 110 dialogues open with an OTH-only user turn (a bare greeting); most others open with OTH+IQU.

Choices:
1. Primary intent of a user turn = its first act, in annotation order, that is neither OTH nor
   END; OTH only when the turn has no other act. So "Hi! Any good comedies?" (OTH, IQU) is IQU and
   "Sounds good, thanks!" (ACC, OTH) is ACC.
2. Closing: the trailing run of user turns whose acts are all OTH/END (thanks, goodbye, "you
   too") is the closing. It is collapsed into one terminal `BYE` (the schema's INTENT_STOP), and
   every dialogue ends with a transition from its last content turn into `BYE`, whether or not the
   user said goodbye in a turn of its own (185 closing turns collapsed; 336 transitions into BYE).
   END inside a content turn (ACC, END) is ignored for the primary intent.
3. Greeting OTH is kept: a leading OTH-only turn stays `OTH` (greeting / small talk), so the
   simulator can open with "Hi" as a third of real users do. OTH in mid-dialogue (small talk,
   thanks that do not end the chat) also stays OTH.
4. Dialogues that open with the AGENT are kept; `start` is the intent of the first USER turn
   whoever spoke first (that turn is often an answer to the assistant's greeting or question).
5. Labels outside the schema: ASK -> INQ (both are questions about a film).
6. Rare intents: an intent that is primary in fewer than --min-count turns (default 30) is
   merged into its nearest schema intent (MERGE_INTO): CON (19) -> IQU, REF (13) -> IQU,
   STO (7) -> IQU (all are requests for a recommendation: more, different, or afresh), and
   CRI-C (14) -> CRI-F (critiquing the suggestion by comparison with another film). It is an
   error if a rare intent has no merge target.
7. Smoothing: transitions get add-alpha (--alpha, default 0.1) over ALL targets (every kept
   intent and BYE), so any intent can follow any other and BYE is reachable from every intent;
   with the smallest row at n=46 that moves at most ~2.5% of a row's mass. `start` is not smoothed:
   a first turn is constrained by context (there is nothing to accept or critique yet), so only
   intents seen in a first turn get mass.
8. Probabilities are rounded to 4 decimals; the rounding residual goes to the row's largest entry
   (ties: alphabetical), and no smoothed entry rounds to 0, so each row sums to 1 exactly in
   units of 1e-4. All maps are written with sorted keys, so the output is deterministic.

Resulting model (default settings): 12 intents (11 + BYE) from 2,076 modelled user turns.
Primary-intent counts: SEE 406, ACC 370, IQU 327 (288 + CON 19, REF 13, STO 7), REJ 215,
PRO 163, OTH 144, INQ 128 (ASK included), CRI-F 100 (86 + CRI-C 14), ANS 98, NRE 79, CRI-A 46.
First user turns (n=336): IQU 202, OTH 110, ANS 18, INQ 2, REJ 2, SEE 2 -> start IQU 0.6010,
OTH 0.3274, ANS 0.0536, INQ/REJ/SEE 0.0060 each. Dialogues end after ACC (190), SEE (74),
PRO (27), REJ (20), ANS (9), CRI-F (6), NRE (5), INQ (3), CRI-A (1), IQU (1).

The counts below are of all 336 dialogues; the committed model is fitted on the train split.

Usage (from the repo root):
    python scripts/fit_iard_intents.py
    python scripts/fit_iard_intents.py --data-dir ../shared/data/iard --out /tmp/x.yaml --lengths-out /tmp/l.yaml --alpha 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from simgen.corpora import CLOSING_ACTS, split_of  # noqa: E402  (the acts a closing turn may carry)
from simgen.lengths import dump_lengths, fit_lengths  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "iard"
DEFAULT_OUT = REPO_ROOT / "profiles" / "movie-recommendation.intents.yaml"
DEFAULT_LENGTHS_OUT = REPO_ROOT / "profiles" / "movie-recommendation.lengths.yaml"
FILES = ("formatted_IARD_annotated_gold.json", "formatted_IARD_annotated_partially.json")

TERMINAL = "BYE"
RENAME = {"ASK": "INQ"}  # labels used in the data but absent from the schema
MERGE_INTO = {"CON": "IQU", "REF": "IQU", "STO": "IQU", "CRI-C": "CRI-F"}  # rare -> nearest
UNITS = 10_000  # probabilities are written in units of 1e-4

DESCRIPTIONS = {
    "ACC": "Accept a suggested movie: say it sounds good and that you will watch it or keep it in mind.",
    "ANS": "Answer the assistant's question about what you want, such as the genre, mood, occasion or who is watching with you.",
    "BYE": "End the conversation: thank the assistant and say goodbye.",
    "CRI-A": "Keep the direction of the suggestions but add a requirement, such as newer, funnier or fine for children.",
    "CRI-F": "Object to something about the suggested movie (too scary, too old, wrong genre) or ask for one more like a film you name.",
    "INQ": "Ask about a movie or the assistant's view of it: its plot, cast or rating, or whether the assistant has seen or liked it.",
    "IQU": "Ask for a movie recommendation and say what kind of film you want; later on, ask for another one or for something different.",
    "NRE": "React to a suggestion without taking a side, for example say you have not seen or heard of it yet.",
    "OTH": "Make small talk outside the recommendation itself: greet the assistant, ask how they are, joke or thank them.",
    "PRO": "Tell the assistant about your own taste: a genre, actor or film you like or dislike.",
    "REJ": "Turn down a suggested movie: say you do not want to watch it or are not interested.",
    "SEE": "Say you have already seen a suggested or mentioned movie, and what you thought of it.",
}

MODIFIERS = """\
modifiers:          # profile-dependent scaling, applied then renormalised; keep this block exactly
  - when: "patience < 0.35"
    scale: {BYE: 2.5}
  - when: "patience > 0.75"
    scale: {BYE: 0.6}
"""

Chain = list[str]  # one dialogue's primary user intents, in order, without the closing


def load_dialogues(data_dir: Path, split: str | None = "train") -> list[dict]:
    """Both annotated files, gold first, in file order; only `split`'s dialogues (None: all)."""
    dialogues: list[dict] = []
    for name in FILES:
        path = data_dir / name
        if not path.is_file():
            raise SystemExit(f"error: {path} not found; pass --data-dir pointing at the IARD folder")
        dialogues.extend(json.loads(path.read_text(encoding="utf-8")))
    return [d for d in dialogues if split is None or split_of(str(d["conversation_id"])) == split]


def user_acts(dialogue: dict) -> list[list[str]]:
    """(user turn) -> act labels, in annotation order."""
    return [
        [act["intent"] for act in utt["dialogue_acts"]]
        for utt in dialogue["conversation"]
        if utt["participant"] == "USER"
    ]


def primary(acts: list[str]) -> str:
    """First act that is neither OTH nor END; OTH when the turn has nothing else."""
    content = [RENAME.get(a, a) for a in acts if a not in CLOSING_ACTS]
    return content[0] if content else "OTH"


def content_turns(turns: list[list[str]]) -> int:
    """How many of a dialogue's user turns (their acts) come before its closing: the trailing run
    of turns whose acts are all OTH/END."""
    n = len(turns)
    while n and set(turns[n - 1]) <= CLOSING_ACTS:
        n -= 1
    return n


def chains(dialogues: list[dict]) -> tuple[list[Chain], int]:
    """(dialogue) -> primary intents of its content turns; and the number of closing turns cut."""
    out: list[Chain] = []
    cut = 0
    for dialogue in dialogues:
        turns = user_acts(dialogue)
        content = content_turns(turns)
        cut += len(turns) - content
        turns = turns[:content]
        if turns:  # a dialogue of nothing but closing turns has no start to learn from
            out.append([primary(acts) for acts in turns])
    return out, cut


def merge_rare(seqs: list[Chain], min_count: int) -> tuple[list[Chain], dict[str, str]]:
    """Rename intents with fewer than `min_count` primary turns to their MERGE_INTO target."""
    counts = Counter(i for seq in seqs for i in seq)
    rare = sorted(i for i, n in counts.items() if n < min_count)
    missing = [i for i in rare if i not in MERGE_INTO]
    if missing:
        raise SystemExit(
            f"error: intents {missing} have fewer than {min_count} turns and no merge target; "
            "add them to MERGE_INTO or lower --min-count"
        )
    merged = {i: MERGE_INTO[i] for i in rare}
    return [[merged.get(i, i) for i in seq] for seq in seqs], merged


def to_units(weights: dict[str, float]) -> dict[str, int]:
    """Weights -> integers summing to UNITS; each positive weight gets at least 1 unit."""
    total = sum(weights.values())
    units = {k: max(1, round(UNITS * w / total)) for k, w in weights.items() if w > 0}
    top = min(units, key=lambda k: (-units[k], k))
    units[top] += UNITS - sum(units.values())
    return units


def fmt_row(units: dict[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {units[k] / UNITS:.4f}" for k in sorted(units)) + "}"


def fmt_counts(counts: Counter) -> str:
    return ", ".join(f"{k} {counts[k]}" for k in sorted(counts))


def user_lines(dialogue: dict) -> list[tuple[list[str], str]]:
    """(user turn) -> (act labels, text)."""
    return [([act["intent"] for act in utt["dialogue_acts"]], utt["utterance"])
            for utt in dialogue["conversation"] if utt["participant"] == "USER"]


def fit_line_lengths(dialogues: list[dict], min_count: int, merged: dict[str, str]) -> str:
    """The YAML text of the length model: words per user line by primary intent; closings are BYE."""
    pairs = []
    per_dialogue: Counter[int] = Counter()  # user lines per dialogue
    last_word: Counter[str] = Counter()  # who says a dialogue's last line
    first_word: Counter[str] = Counter()  # ... and its first
    for dialogue in dialogues:
        lines = user_lines(dialogue)
        if lines:
            per_dialogue[len(lines)] += 1
            last_word["user" if dialogue["conversation"][-1]["participant"] == "USER" else "assistant"] += 1
            first_word["user" if dialogue["conversation"][0]["participant"] == "USER" else "assistant"] += 1
        content = content_turns([acts for acts, _ in lines])
        for i, (acts, text) in enumerate(lines):
            label = TERMINAL if i >= content else primary(acts)
            pairs.append((merged.get(label, label), text))
    rows = fit_lengths(pairs, min_count=min_count)
    header = (f"generated by scripts/fit_iard_intents.py from IARD's train split ({len(dialogues)} dialogues, "
              f"{len(pairs)} user lines); do not edit by hand\n"
              f"words per user line (whitespace-separated), per primary intent with >= {min_count} lines; '*': all lines\n"
              f"dialogues: user lines per dialogue; last_word, first_word: dialogues whose last (first) line is the user's / "
              f"the recommender's")
    return dump_lengths(rows, f"IARD train split: {len(dialogues)} dialogues, {len(pairs)} user lines", header, dialogues=per_dialogue,
                        last_word=last_word, first_word=first_word)


def fit(dialogues: list[dict], alpha: float, min_count: int) -> tuple[str, dict[str, str]]:
    """The YAML text of the intent model fitted on `dialogues`, and the rare intents merged away."""
    n_user = sum(len(user_acts(d)) for d in dialogues)
    seqs, cut = chains(dialogues)
    seqs, merged = merge_rare(seqs, min_count)
    intents = sorted({i for seq in seqs for i in seq})
    missing = [i for i in intents if i not in DESCRIPTIONS]
    if missing:
        raise SystemExit(f"error: no description for intents {missing}; add them to DESCRIPTIONS")
    targets = sorted(intents + [TERMINAL])

    start = Counter(seq[0] for seq in seqs)  # intent -> first-turn count
    trans: dict[str, Counter] = {i: Counter() for i in intents}  # from -> to -> count
    for seq in seqs:
        for a, b in zip(seq, seq[1:] + [TERMINAL]):
            trans[a][b] += 1

    lines = [
        f"# generated by scripts/fit_iard_intents.py from IARD's train split ({len(dialogues)} dialogues, "
        f"{n_user} user turns); do not edit by hand",
        f"# settings: alpha={alpha:g} over all targets, min-count={min_count}; "
        f"merged: {', '.join(f'{k}->{v}' for k, v in sorted(merged.items())) or 'none'}, ASK->INQ",
        f"# {sum(map(len, seqs))} modelled user turns; {cut} trailing closing turns (OTH/END only) "
        "collapsed into BYE",
        "intents:",
    ]
    for i in targets:
        desc = json.dumps(DESCRIPTIONS[i])
        lines.append(f"  {i}: {{description: {desc}, terminal: {'true' if i == TERMINAL else 'false'}}}")
    lines.append(f"# raw counts of first user turns (n={sum(start.values())} dialogues):")
    lines += [f"#   {i}: n={start[i]}" for i in sorted(start)]
    lines.append("# raw transition counts per from-intent row (before smoothing):")
    for i in intents:
        lines.append(f"#   {i}: n={sum(trans[i].values())} ({fmt_counts(trans[i])})")
    lines.append("start:")
    start_units = to_units(dict(start))
    lines += [f"  {i}: {start_units[i] / UNITS:.4f}" for i in sorted(start_units)]
    lines.append("transitions:")
    for i in intents:
        row = to_units({t: trans[i][t] + alpha for t in targets})
        lines.append(f"  {i}: {fmt_row(row)}")
    aliases = {**RENAME, **merged, "END": TERMINAL}
    lines.append("aliases:            # raw IARD labels -> the intent they count as here")
    lines += [f"  {k}: {aliases[k]}" for k in sorted(aliases)]
    return "\n".join(lines) + "\n" + MODIFIERS, merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fit the movie-recommendation intent model from the IARD annotations.",
        epilog="Usage" + __doc__.split("Usage", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder with the IARD JSON files (default: ../shared/data/iard from the repo root)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="YAML file to write (default: profiles/movie-recommendation.intents.yaml)")
    parser.add_argument("--lengths-out", type=Path, default=DEFAULT_LENGTHS_OUT,
                        help="length model to write (default: profiles/movie-recommendation.lengths.yaml)")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="add-alpha smoothing added to every transition count (default: 0.1)")
    parser.add_argument("--min-count", type=int, default=30,
                        help="intents primary in fewer turns are merged into MERGE_INTO (default: 30)")
    args = parser.parse_args(argv)
    if args.alpha < 0:
        parser.error("--alpha must be >= 0")
    dialogues = load_dialogues(args.data_dir)
    text, merged = fit(dialogues, args.alpha, args.min_count)
    for out, body in ((args.out, text), (args.lengths_out, fit_line_lengths(dialogues, args.min_count, merged))):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
