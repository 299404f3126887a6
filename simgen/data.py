"""The data model of simgen, in one place: one frozen record per stage and the turns schema.

    ProfileLatent  who the simulated user is (session level, fixed for a dialogue)
    Turn           one line of a dialogue: who spoke, what, under which intent
    Dialogue       a profile latent and its turns, with why it stopped
    Generation     what a backend returns for one chat

A run's `turns.parquet` holds one row per `Turn`, with the dialogue's profile latent as a polars
Struct column `profile` (the same value on every row of a dialogue) and the dialogue's stop reason
on its last row. This module does not sample, render, generate or write anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

Role = Literal["user", "assistant"]
# A chat as chat templates take it: [{"role": "system" | "user" | "assistant", "content": str}, ...]
Chat = list[dict[str, str]]

# Why a dialogue ended. `degenerate_output` and `generation_error` carry a detail after a colon.
STOP_REASONS = (
    "terminal_intent",  # the user turn's intent was terminal (e.g. BYE); the assistant may have answered it (the `reply` latent)
    "max_turns",  # the dialogue reached --max-turns user turns
    "empty_output",  # a side produced an empty line
    "degenerate_output",  # a side repeated itself or echoed the other side
    "generation_error",  # the backend or the assistant callable raised
)


@dataclass(frozen=True)
class ProfileLatent:
    """One sampled value of every profile variable; `values` keeps the declaration order."""

    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def backstory(self) -> str | None:
        return self.values.get("backstory")


@dataclass(frozen=True)
class Turn:
    """One line of a dialogue. `turn` counts rows of the dialogue from 0, user and assistant alike."""

    turn: int
    role: Role
    text: str
    intent: str | None = None  # the intent latent of a user turn; None for assistant turns
    n_tokens: int = 0  # tokens the backend generated for this line
    finish_reason: str | None = None  # "stop" (end of turn) | "length" (hit max_new_tokens) | "trimmed" (hit it, cut to a sentence end) | "target" (cut at the sentence end nearest its target length) | "error" | None
    target_words: int | None = None  # the length latent of the line (words); None without a length model (or its `assistant` row)
    redraws: int | None = None  # times the line was drawn again (generation/simulator.py `_draw`); None when the run had no redraws


@dataclass(frozen=True)
class Dialogue:
    dialogue_id: str
    index: int  # position in the run; with the seed, it determines the dialogue
    profile: ProfileLatent
    turns: tuple[Turn, ...]
    stop_reason: str
    take: int | None = None  # which writing of the dialogue was kept (0: the first; the dialogue guard's redraws); None without them


@dataclass(frozen=True)
class Generation:
    """A backend's answer for one chat."""

    text: str
    n_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length" (max_new_tokens) | "until" (the caller's `until` said the line was done)
    error: str | None = None  # set when this one chat failed; the run records it and goes on


# The fixed columns of turns.parquet, in order; `profile` (a Struct whose fields depend on the
# profile space) follows them.
TURN_COLUMNS: dict[str, pl.DataType] = {
    "dialogue_id": pl.String(),
    "turn": pl.Int32(),
    "role": pl.String(),
    "text": pl.String(),
    "intent": pl.String(),
    "n_tokens": pl.Int32(),
    "finish_reason": pl.String(),
    "stop_reason": pl.String(),  # set on the last row of each dialogue, null elsewhere
    "target_words": pl.Int32(),  # user turns of a scenario with a length model, assistant turns with its `assistant` row; null elsewhere
    "redraws": pl.Int32(),  # times the line was drawn again (0: the first draw was kept); null when the run had no redraws
    "take": pl.Int32(),  # which writing of the whole dialogue was kept (0: the first; --dialogue-redraws); null when the run had none
}
# columns added after runs were first written: a run without them still loads (they read as null)
OPTIONAL_COLUMNS: tuple[str, ...] = ("target_words", "redraws", "take")


def dialogue_id(index: int) -> str:
    """The id of dialogue `index` of a run: stable, sortable, unique within the run."""
    return f"d{index:07d}"


def dialogues_to_frame(dialogues: list[Dialogue], profile_schema: pl.Struct) -> pl.DataFrame:
    """Flatten dialogues into the turns frame: (dialogue, turn) -> one row."""
    rows: dict[str, list[Any]] = {name: [] for name in TURN_COLUMNS}
    profiles: list[dict[str, Any]] = []
    for d in dialogues:
        last = len(d.turns) - 1
        for i, t in enumerate(d.turns):
            rows["dialogue_id"].append(d.dialogue_id)
            rows["turn"].append(t.turn)
            rows["role"].append(t.role)
            rows["text"].append(t.text)
            rows["intent"].append(t.intent)
            rows["n_tokens"].append(t.n_tokens)
            rows["finish_reason"].append(t.finish_reason)
            rows["stop_reason"].append(d.stop_reason if i == last else None)
            rows["target_words"].append(t.target_words)
            rows["redraws"].append(t.redraws)
            rows["take"].append(d.take)
            profiles.append(d.profile.values)
    frame = pl.DataFrame(rows, schema=TURN_COLUMNS)
    return frame.with_columns(pl.Series("profile", profiles, dtype=profile_schema))


def frame_to_dialogues(turns: pl.DataFrame) -> list[Dialogue]:
    """The inverse of `dialogues_to_frame`: a turns frame -> Dialogue records, in dialogue and turn order.

    Only `dialogue_id`, `turn`, `role` and `text` are required; a missing column reads as null. A
    dialogue's profile is the first non-null `profile` on its rows (empty when it has none: a caller
    that needs one checks), its stop reason the last non-null `stop_reason` (else "max_turns"), and
    its index the number of a `d0000042`-style id (else its position in the frame).
    """
    out = []
    for position, ((did,), group) in enumerate(turns.sort("dialogue_id", "turn", maintain_order=True)
                                               .group_by("dialogue_id", maintain_order=True)):
        rows = group.to_dicts()
        dturns = tuple(Turn(int(r["turn"]), r["role"], r["text"] or "", r.get("intent"), r.get("n_tokens") or 0, r.get("finish_reason"),
                            r.get("target_words"), r.get("redraws"))
                       for r in rows)
        profile = next((p for r in rows if (p := r.get("profile")) is not None), None)
        stop = next((s for r in reversed(rows) if (s := r.get("stop_reason"))), "max_turns")
        index = int(did[1:]) if did[:1] == "d" and did[1:].isdigit() else position
        take = rows[0].get("take")
        out.append(Dialogue(did, index, ProfileLatent(dict(profile or {})), dturns, stop, take))
    return out
