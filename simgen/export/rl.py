"""`simgen export rl`: a run as training data in TRL's dataset formats.

    sft      {"messages": [...]}                   one conversation per dialogue (conversational LM)
    prompt   {"prompt": [...], "profile", "history"}  one conversation prefix per policy turn (GRPO, RLOO, PPO)
    dpo      {"prompt", "chosen", "rejected", "margin"}  per user turn: N sampled candidate lines ranked by
                                                   the consistency reward; a pair when best - worst >= margin
    rewards  {"prompt", "completion", "reward", ...} per user line: its consistency reward (offline RL)

The *policy* is the side being trained. `user` (the default) trains the user simulator, as in the
persona-consistency RL work: its chat is the simulator's own, exactly as simgen sent it (roles
flipped: the persona prompt is the system message, the simulated user's lines are `assistant`
messages, the assistant's lines arrive as `user` messages with the turn's intent instruction; built by
`simgen.generation.chats.user_chat`). `assistant` gives the natural chat from the assistant's side, with the
assistant system prompt it was generated under. dpo and rewards score persona consistency, so they
train the user side only.

Every row carries `dialogue_id` and the `profile` latent, so `simgen.consistency.make_reward` scores
completions of prompt rows as GRPOTrainer passes them (`profile`, `history` columns). A dialogue that
stopped on an empty, degenerate or failed line is cut before that line; nothing else is dropped
besides duplicates (splits.py). Rewards come from RUN/consistency.parquet when `simgen consistency`
was run, else from the judge; export.json records which. The run is read in chunks of dialogues,
so memory is bounded by a chunk, not the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from simgen import rng
from simgen.data import Chat, Dialogue, Turn, frame_to_dialogues
from simgen.errors import ConfigError, RunError, unknown_name
from simgen.export.card import config_entry, render_card, size_category, table
from simgen.export.output import check_target, staged, write_splits
from simgen.export.splits import SPLITS, Selection, SplitConfig, select
from simgen.files import atomic_write_json, now
from simgen.generation.run import Run, load_run
from simgen.lazy import resolve
from simgen.scenario import Scenario, load_recorded
from simgen.generation.chats import assistant_chat, job_of, user_chat
from simgen.generation.simulator import clean_line

# format name -> "module:class" (a `Format`); a new format is its class plus one line here
FORMATS: dict[str, str] = {
    "sft": "simgen.export.rl:SFT",
    "prompt": "simgen.export.rl:Prompt",
    "dpo": "simgen.export.rl:DPO",
    "rewards": "simgen.export.rl:Rewards",
}
POLICIES = ("user", "assistant")
BAD_STOPS = ("empty_output", "degenerate_output", "generation_error")
CHUNK = 1000  # dialogues read and turned into rows at a time
DPO_STREAM = 10  # rng stream of the candidate lines (simgen.rng uses 0-3)

MESSAGES = pl.List(pl.Struct({"role": pl.String(), "content": pl.String()}))


@dataclass(frozen=True)
class RLConfig:
    """What `simgen export rl` writes (the CLI flags map one to one onto these fields)."""

    format: str = field(default="sft", metadata={"help": " | ".join(FORMATS)})
    policy: str = field(default="user", metadata={"help": "the side being trained: user (the simulator) or assistant"})
    judge: str | None = field(default=None, metadata={"help": "consistency judge spec for dpo/rewards (default llm)"})
    specificity_weight: float = field(default=0.0, metadata={"help": "reward bonus for profile attributes mentioned (simgen.consistency.rewards.SPECIFICITY_CAP at most)"})
    model: str | None = field(default=None, metadata={"help": "dpo: model that samples candidates; None = the run's user model"})
    dtype: str = field(default="auto", metadata={"help": "dpo: auto | bfloat16 | float32"})
    candidates: int = field(default=4, metadata={"help": "dpo: candidate lines sampled per prompt"})
    margin: float = field(default=0.05, metadata={"help": "dpo: keep a pair only when best - worst reward >= margin"})
    temperature: float | None = field(default=None, metadata={"help": "dpo: sampling temperature; None = the run's (1.0 if it was greedy)"})
    max_prompts: int = field(default=0, metadata={"help": "dpo: user turns to sample for at most (0 = all)"})
    batch_size: int = field(default=8, metadata={"help": "dpo: chats per generate call"})

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(unknown_name("policy", self.policy, POLICIES))
        fmt = format_class(self.format)  # an unknown name lists the known ones
        if self.policy not in fmt.policies:
            others = [name for name in FORMATS if self.policy in format_class(name).policies]
            raise ConfigError(f"--format {self.format} {fmt.why_policies}: use --policy {' or '.join(fmt.policies)}"
                              + (f" (or {'/'.join(others)} for the {self.policy})." if others else "."))
        if not (isinstance(self.candidates, int) and self.candidates >= 2):
            raise ConfigError(f"--candidates must be an integer >= 2, got {self.candidates!r}.")
        for name in ("max_prompts",):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 0, got {getattr(self, name)!r}.")
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ConfigError(f"--batch-size must be a positive integer, got {self.batch_size!r}.")
        if self.margin < 0 or self.specificity_weight < 0:
            raise ConfigError(f"--margin and --specificity-weight must be >= 0, got {self.margin} and {self.specificity_weight}.")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0 for dpo (greedy sampling gives N equal candidates), got {self.temperature}.")


# ---------------------------------------------------------------- dialogues -> chats


def usable_turns(d: Dialogue) -> tuple[Turn, ...]:
    """The dialogue's turns without the line that stopped it for a bad reason (empty, degenerate, error)."""
    turns = d.turns
    if turns and (turns[-1].finish_reason == "error" or (d.stop_reason or "").split(":")[0] in BAD_STOPS):
        turns = turns[:-1]
    return turns


class Chats:
    """Builds each side's chat of a dialogue the way the simulator did."""

    def __init__(self, scenario: Scenario, max_turns: int) -> None:
        self.scenario = scenario
        self.max_turns = max_turns

    def user_prefix(self, d: Dialogue, k: int) -> Chat:
        """The simulator's chat before user line k (roles flipped), ending in that turn's instruction."""
        return user_chat(self.scenario, job_of(self.scenario, d), d.turns, k, self.max_turns)

    def assistant_prefix(self, d: Dialogue, turns: Sequence[Turn]) -> Chat:
        """The assistant's chat (natural roles) over `turns`."""
        return assistant_chat(self.scenario, d.profile, turns, self.max_turns)

    def conversation(self, d: Dialogue, policy: str) -> Chat | None:
        """The whole usable dialogue as the policy side's chat, ending in the policy's last line."""
        turns = usable_turns(d)
        if policy == "user":
            users = [t for t in turns if t.role == "user"]
            return [*self.user_prefix(d, len(users) - 1), {"role": "assistant", "content": users[-1].text}] if users else None
        while turns and turns[-1].role != "assistant":
            turns = turns[:-1]
        return self.assistant_prefix(d, turns) if turns else None

    def prompts(self, d: Dialogue, policy: str) -> Iterator[dict[str, Any]]:
        """One prompt per policy line: {prompt, completion (the run's line), history, turn, user_turn, intent}."""
        turns = usable_turns(d)
        history: list[str] = []
        k = 0
        for i, t in enumerate(turns):
            if t.role == "user":
                if policy == "user":
                    yield {"prompt": self.user_prefix(d, k), "completion": t.text, "history": list(history),
                           "turn": t.turn, "user_turn": k, "intent": t.intent}
                    history.append(t.text)
                k += 1
            elif policy == "assistant":
                yield {"prompt": self.assistant_prefix(d, turns[:i]), "completion": t.text, "history": list(history),
                       "turn": t.turn, "user_turn": k - 1, "intent": turns[i - 1].intent if i else None}
                history.append(t.text)


# ---------------------------------------------------------------- rewards


class RewardSource:
    """Per-line rewards: from RUN/consistency.parquet when present, else from the judge."""

    def __init__(self, run: Run, config: RLConfig) -> None:
        self.weight = config.specificity_weight
        from simgen.consistency.check import SIDECAR

        self.sidecar = run.path / SIDECAR
        self.judge = None
        self.config = config
        if self.sidecar.is_file():
            report = run.path / "reports" / "consistency.json"
            judge = json.loads(report.read_text())["judge"] if report.is_file() else {"judge": "unknown"}
            self.describe = {"source": str(self.sidecar), "judge": judge}
        else:
            self.describe = {"source": "computed", "judge": self._judge().describe()}

    def _judge(self) -> Any:
        if self.judge is None:
            from simgen.consistency.judges import load_judge

            self.judge = load_judge(self.config.judge)
        return self.judge

    def score(self, dialogue_ids: list[str], rows: list[dict[str, Any]]) -> None:
        """Add reward, prompt_to_line, line_to_line, specificity to each row (user lines)."""
        from simgen.consistency.metrics import attribute_values, mentioned
        from simgen.consistency.rewards import line_reward

        for r in rows:
            r["specificity"] = len(mentioned(r["completion"], attribute_values(r["profile"])))
        if self.sidecar.is_file():
            scores = (pl.scan_parquet(self.sidecar).filter(pl.col("dialogue_id").is_in(dialogue_ids))
                      .select("dialogue_id", "turn", "p2l_contradiction", "l2l_score").collect())
            by_key = {(d, t): (p, l) for d, t, p, l in scores.iter_rows()}
            parts = [by_key.get((r["dialogue_id"], r["turn"]), (None, None)) for r in rows]
        else:
            from simgen.consistency.rewards import make_reward

            judge = self._judge()
            args = ([r["prompt"] for r in rows], [r["completion"] for r in rows])
            kw = {"profile": [r["profile"] for r in rows], "history": [r["history"] for r in rows]}
            p2l = make_reward("prompt_to_line", judge)(*args, **kw)
            l2l = make_reward("line_to_line", judge)(*args, **kw)
            parts = [(1.0 - a if r["completion"].strip() else None, b if r["history"] else None)
                     for a, b, r in zip(p2l, l2l, rows)]
        for r, (p, l) in zip(rows, parts):
            r["prompt_to_line"] = 1.0 - p if p is not None else None
            r["line_to_line"] = l
            r["reward"] = line_reward("consistency", p is None, p, l, r["specificity"], self.weight)


# ---------------------------------------------------------------- dpo candidates


class Candidates:
    """Samples N candidate lines per prompt with the run's model in this process and ranks them by reward."""

    def __init__(self, run: Run, config: RLConfig, seed: int) -> None:
        from simgen.backends import local_model
        from simgen.config import SamplingConfig
        from simgen.models import spec_of
        from simgen.consistency.rewards import make_reward

        self.config, self.seed = config, seed
        user = ((run.manifest.get("config") or {}).get("user")) or {}
        temperature = config.temperature or (user.get("temperature") or 1.0)
        self.sampling = SamplingConfig(**{**user, "temperature": temperature})
        run_model = ((run.manifest.get("backend") or {}).get("user") or {}).get("model")
        self.backend = local_model(config.model if config.model is not None else spec_of(run_model), config.dtype)
        self.reward = make_reward("consistency", config.judge, specificity_weight=config.specificity_weight)
        self.describe = {"model": self.backend.describe(), "sampling": asdict(self.sampling), "judge": self.reward.judge.describe(),
                         "reward": "consistency", "specificity_weight": config.specificity_weight}

    def pairs(self, rows: list[dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        n = self.config.candidates
        chats = [r["prompt"] for r in rows for _ in range(n)]
        seeds = [rng.derive(self.seed, int(r["dialogue_id"][1:]) if r["dialogue_id"][1:].isdigit() else 0, DPO_STREAM, r["user_turn"] * 1000 + c)
                 for r in rows for c in range(n)]
        lines: list[str] = []
        for i in range(0, len(chats), self.config.batch_size):
            gens = self.backend.generate(chats[i:i + self.config.batch_size], self.sampling, seeds[i:i + self.config.batch_size])
            lines += [clean_line(g.text) if not g.error else "" for g in gens]
        out = []
        for j, r in enumerate(rows):
            cands = list(dict.fromkeys(c for c in lines[j * n:(j + 1) * n] if c))  # distinct, non-empty, in order
            if len(cands) < 2:
                skipped["fewer_than_2_distinct_candidates"] += 1
                continue
            rewards = self.reward([r["prompt"]] * len(cands), cands, profile=[r["profile"]] * len(cands), history=[r["history"]] * len(cands))
            best = max(range(len(cands)), key=lambda c: rewards[c])
            worst = min(range(len(cands)), key=lambda c: rewards[c])
            margin = rewards[best] - rewards[worst]
            if best == worst or margin < self.config.margin:  # all tied: no preference to learn
                skipped["margin_below_threshold"] += 1
                continue
            out.append({**{k: r[k] for k in ("prompt", "profile", "history", "dialogue_id", "turn", "user_turn", "split")},
                        "chosen": [{"role": "assistant", "content": cands[best]}],
                        "rejected": [{"role": "assistant", "content": cands[worst]}],
                        "margin": margin, "chosen_reward": rewards[best], "rejected_reward": rewards[worst],
                        "n_candidates": len(cands)})
        return out


# ---------------------------------------------------------------- formats


def format_class(name: str) -> type[Format]:
    """The format registered as `name`; an unknown name lists the known ones."""
    return resolve(FORMATS, name, "format", ConfigError)


class Format:
    """One TRL dataset format: what a row holds and how a chunk of dialogues becomes rows.

        class MyFormat(Format):
            name = "myformat"
            columns = ("prompt", "dialogue_id", "profile", "split")   # the rows' columns, in order
            messages = ("prompt",)                                   # columns of [{role, content}]
            def rows(self, chats, dialogues, base, skipped): ...     # base[d]: dialogue_id, profile, split

    `policies` are the sides it can train, `consumes` the run's sidecars it reads (when present),
    `finish` turns a chunk's rows into what is written (scores them, samples candidates), and
    `describe` and `card` say what it did in export.json and the dataset card.
    """

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    messages: ClassVar[tuple[str, ...]]
    policies: ClassVar[tuple[str, ...]] = POLICIES
    why_policies: ClassVar[str] = ""  # said when --policy is not one of `policies`
    consumes: ClassVar[tuple[str, ...]] = ()
    records: ClassVar[str | None] = None  # the export.json key under which `describe()` is recorded, if any
    example: ClassVar[str] = ""  # the trainer call the dataset card shows
    skips: ClassVar[tuple[str, ...]] = ("no_policy_line",)  # the reasons it counts for rows it drops

    def __init__(self, run: Run, config: RLConfig, seed: int) -> None:
        self.run, self.config, self.seed = run, config, seed
        self.left = config.max_prompts or math.inf  # policy turns it may still turn into rows

    def rows(self, chats: Chats, dialogues: list[Dialogue], base: dict[str, dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        """One row per policy turn (`Chats.prompts`); dialogues with none are counted as skipped."""
        out = []
        for d in dialogues:
            prompts = list(chats.prompts(d, self.config.policy))
            if not prompts:
                skipped["no_policy_line"] += 1
            out += [{**p, **base[d.dialogue_id]} for p in prompts]
        return out

    def finish(self, ids: list[str], rows: list[dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        return rows

    def describe(self) -> dict[str, Any] | None:
        """Where its scores or candidates came from (judge, model, sampling), for export.json."""
        return None

    def card(self) -> list[str]:
        """Paragraphs for the dataset card about where scores or candidates came from."""
        return []

    def frame(self, rows: list[dict[str, Any]], profile_dtype: pl.DataType) -> pl.DataFrame:
        """Rows -> a frame with the format's columns and fixed dtypes (messages as [{role, content}])."""
        schema = {c: MESSAGES for c in self.messages} | {"profile": profile_dtype, "history": pl.List(pl.String())}
        if not rows:
            return pl.DataFrame(schema={c: schema.get(c, pl.String()) for c in self.columns})
        return pl.DataFrame([{c: r.get(c) for c in self.columns} for r in rows], schema_overrides=schema,
                            infer_schema_length=None).select(self.columns)


class SFT(Format):
    """One conversation per dialogue, ending in the policy's last line (SFTTrainer)."""

    name = "sft"
    columns = ("messages", "dialogue_id", "profile", "split")
    messages = ("messages",)
    example = "SFTTrainer(model, train_dataset=ds['train'])"

    def rows(self, chats: Chats, dialogues: list[Dialogue], base: dict[str, dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        out = []
        for d in dialogues:
            messages = chats.conversation(d, self.config.policy)
            if messages is None:
                skipped["no_policy_line"] += 1
            else:
                out.append({"messages": messages, **base[d.dialogue_id]})
        return out


class Prompt(Format):
    """One conversation prefix per policy turn, with the profile and history a reward needs (GRPO, RLOO, PPO)."""

    name = "prompt"
    columns = ("prompt", "profile", "history", "dialogue_id", "turn", "user_turn", "intent", "split")
    messages = ("prompt",)
    example = "GRPOTrainer(model, reward_funcs=[make_reward('consistency', judge='llm', specificity_weight=0.3)], train_dataset=ds['train'])"


class Rewards(Format):
    """Per user line: its consistency reward (offline RL), from the run's sidecar when present, else the judge."""

    name = "rewards"
    columns = ("prompt", "completion", "reward", "prompt_to_line", "line_to_line", "specificity", "done", "profile", "history",
               "dialogue_id", "turn", "user_turn", "intent", "split")
    messages = ("prompt", "completion")
    policies = ("user",)
    why_policies = "scores persona consistency, so it trains the user simulator"
    consumes = ("consistency.parquet",)
    records = "rewards"
    example = "offline RL: (prompt, completion, reward, done) per user line"

    def __init__(self, run: Run, config: RLConfig, seed: int) -> None:
        super().__init__(run, config, seed)
        self.source = RewardSource(run, config)

    def rows(self, chats: Chats, dialogues: list[Dialogue], base: dict[str, dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        out = []
        for d in dialogues:
            rows = super().rows(chats, [d], base, skipped)
            for r in rows:
                r["done"] = r is rows[-1]
            out += rows
        return out

    def finish(self, ids: list[str], rows: list[dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        self.source.score(ids, rows)
        for r in rows:  # the completion as a one-message conversation, in the prompt's roles
            r["completion"] = [{"role": "assistant" if r["prompt"][-1]["role"] == "user" else "user", "content": r["completion"]}]
        return rows

    def describe(self) -> dict[str, Any]:
        return self.source.describe

    def card(self) -> list[str]:
        judge = self.source.describe["judge"]
        return [f"Rewards: `consistency` (mean of prompt-to-line and line-to-line, + {self.config.specificity_weight} x specificity), "
                f"from {self.source.describe['source']}, judge `{judge.get('judge')}` {judge.get('model', '')}."]


class DPO(Format):
    """Per user turn: candidate lines sampled with the run's model, ranked by the consistency reward (DPOTrainer)."""

    name = "dpo"
    columns = ("prompt", "chosen", "rejected", "margin", "chosen_reward", "rejected_reward", "n_candidates", "profile", "history",
               "dialogue_id", "turn", "user_turn", "split")
    messages = ("prompt", "chosen", "rejected")
    policies = ("user",)
    why_policies = Rewards.why_policies
    records = "candidates"
    example = "DPOTrainer(model, train_dataset=ds['train'])"
    skips = ("no_policy_line", "fewer_than_2_distinct_candidates", "margin_below_threshold")

    def __init__(self, run: Run, config: RLConfig, seed: int) -> None:
        super().__init__(run, config, seed)
        self.candidates = Candidates(run, config, seed)

    def finish(self, ids: list[str], rows: list[dict[str, Any]], skipped: dict[str, int]) -> list[dict[str, Any]]:
        rows = rows[:int(min(self.left, len(rows)))]
        self.left -= len(rows)
        return self.candidates.pairs(rows, skipped)

    def describe(self) -> dict[str, Any]:
        return self.candidates.describe

    def card(self) -> list[str]:
        c = self.candidates.describe
        return [f"Candidates: {self.config.candidates} per prompt from `{c['model']['model']['id']}`, ranked by the "
                f"consistency reward (judge `{c['judge'].get('judge')}`); pairs with margin >= {self.config.margin}."]


# ---------------------------------------------------------------- the export


def export_rl(run: Run | str | Path, to: str | Path, format: str = "sft", *, config: RLConfig | None = None,
              split: SplitConfig = SplitConfig(), overwrite: bool = False, **options: Any) -> dict[str, Any]:
    """Write RUN in one of TRL's formats at `to` (see the module doc); return the export summary.

    `options` are RLConfig fields (policy, judge, candidates, margin, ...) when `config` is not given.
    """
    config = config or RLConfig(format=format, **options)
    run = run if isinstance(run, Run) else load_run(run)
    to = Path(to)
    check_target(to, overwrite, run.path)
    scenario = load_recorded(run.manifest.get("scenario") or {}, str(run.path),
                             "the rebuilt chats would not be what the simulator saw")
    selection = select(run.scan(), split)
    chats = Chats(scenario, run.max_turns)
    profile_dtype = run.scan().collect_schema()["profile"]
    split_of = dict(selection.assignments.iter_rows())
    ids = selection.assignments["dialogue_id"].to_list()
    fmt = format_class(config.format)(run, config, split.seed)
    skipped = dict.fromkeys(fmt.skips, 0)
    with staged(to, overwrite) as tmp:
        parts = tmp / ".parts"
        parts.mkdir()
        n_parts = 0
        for start in range(0, len(ids), CHUNK):
            if fmt.left <= 0:
                break
            chunk = ids[start:start + CHUNK]
            frame = run.scan().filter(pl.col("dialogue_id").is_in(chunk)).sort("dialogue_id", "turn").collect()
            dialogues = frame_to_dialogues(frame)
            base = {d.dialogue_id: {"dialogue_id": d.dialogue_id, "profile": d.profile.values, "split": split_of[d.dialogue_id]}
                    for d in dialogues}
            rows = fmt.finish(chunk, fmt.rows(chats, dialogues, base, skipped), skipped)
            if rows:
                fmt.frame(rows, profile_dtype).write_parquet(parts / f"part-{n_parts:05d}.parquet")
                n_parts += 1
        data = pl.scan_parquet(sorted(parts.glob("*.parquet"))) if n_parts else fmt.frame([], profile_dtype).lazy()
        files = write_splits(data, tmp / "data", SPLITS)
        for p in parts.glob("*.parquet"):
            p.unlink()
        parts.rmdir()
        if not files:
            raise RunError(f"--format {config.format}: no rows to write ({skipped}); nothing was written to {to}.")
        summary = {"format": config.format, "policy": config.policy, "run": str(run.path), "to": str(to), "exported": now(),
                   "config": asdict(config), "files": files, "skipped": skipped, "selection": selection.summary(),
                   **({fmt.records: fmt.describe()} if fmt.records else {}),
                   "recipe": {"scenario": run.manifest.get("scenario"), "seed": run.manifest.get("seed"),
                              "model": (run.manifest.get("backend") or {}).get("user")}}
        atomic_write_json(tmp / "export.json", summary)
        (tmp / "README.md").write_text(_card(run, fmt, files, selection, skipped, summary), encoding="utf-8")
    return summary


def _card(run: Run, fmt: Format, files: dict[str, dict[str, int]], selection: Selection, skipped: dict[str, int],
          summary: dict[str, Any]) -> str:
    config = fmt.config
    counts = selection.counts
    n = sum(v["rows"] for v in files.values())
    metadata = {
        "license": "other",
        "task_categories": ["text-generation"],
        "size_categories": [size_category(n)],
        "tags": ["synthetic", "simgen", "trl", config.format, run.manifest["scenario"]["name"]],
        "configs": [config_entry(config.format, "data", files, default=True)],
    }
    body = [
        f"TRL `{config.format}` data (policy: the {'user simulator' if config.policy == 'user' else 'assistant'}) exported by "
        f"`simgen export rl` from a run of scenario `{run.manifest['scenario']['name']}` (seed {run.manifest.get('seed')}).",
        "```python\nfrom datasets import load_dataset\nfrom simgen.consistency import make_reward\n"
        f"ds = load_dataset('{Path(summary['to']).name}')\n# {fmt.example}\n```",
        table([[s, v["rows"]] for s, v in files.items()], ["split", "rows"]),
        f"Splits are by dialogue (seed {selection.config.seed}); {counts['exact_duplicates']} exact and "
        f"{counts['near_duplicates']} near-duplicate dialogues were dropped first. Skipped: "
        + (", ".join(f"{k}: {v}" for k, v in skipped.items()) or "none") + ".",
    ]
    body += fmt.card()
    body.append("`export.json` records every option, the counts and the run's recipe.")
    return render_card(metadata, f"simgen {config.format} export", "\n\n".join(body))
