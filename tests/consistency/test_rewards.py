"""The reward functions follow TRL's signature f(prompts, completions, **kwargs) -> list[float]."""

from __future__ import annotations

import inspect

import pytest
from tests.consistency.conftest import PRIYA, RuleJudge

from simgen.consistency.rewards import ConsistencyReward, make_reward
from simgen.errors import ConfigError, DataError

PROMPTS = ["What's for dinner?", "What's for dinner?", "Tell me about you"]
COMPLETIONS = ["a big steak, obviously", "tofu stir fry", "i'm a student who loves comedy"]


def test_signature_is_trls():
    params = inspect.signature(ConsistencyReward.__call__).parameters
    assert list(params)[:3] == ["self", "prompts", "completions"]
    assert params["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    reward = make_reward("prompt_to_line", RuleJudge())
    assert reward.__name__ == "simgen_prompt_to_line"


def test_prompt_to_line_reward_values():
    reward = make_reward("prompt_to_line", RuleJudge())
    # TRL passes the dataset's other columns as keyword lists, plus its own extras
    out = reward(prompts=PROMPTS, completions=COMPLETIONS, profile=[PRIYA] * 3, completion_ids=[[1], [2], [3]], trainer_state=None)
    assert out == pytest.approx([0.1, 0.9, 0.9])
    assert all(isinstance(v, float) for v in out)


def test_line_to_line_reads_earlier_persona_lines_from_history_or_conversational_prompts():
    reward = make_reward("line_to_line", RuleJudge(rules=(("comedy", "hate comedies"),)))
    conversational = [[{"role": "system", "content": "You are Priya."}, {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "i want a comedy"}, {"role": "user", "content": "ok, what else?"}]]
    completion = [[{"role": "assistant", "content": "honestly i hate comedies"}]]
    assert reward(conversational, completion, profile=[PRIYA]) == pytest.approx([0.1])
    assert reward(["x"], ["honestly i hate comedies"], profile=[PRIYA], history=[["i want a comedy", "also short"]]) == pytest.approx([0.5])
    assert reward(["x"], ["honestly i hate comedies"], profile=[PRIYA]) == [1.0]  # nothing earlier to contradict


def test_consistency_reward_and_specificity_term():
    plain = make_reward("consistency", RuleJudge())
    specific = make_reward("consistency", RuleJudge(), specificity_weight=0.3)
    vague, concrete = "sounds nice", "as a vegetarian student i love comedy"
    base = plain(["x", "x"], [vague, concrete], profile=[PRIYA, PRIYA])
    # mean of prompt-to-line (0.9) and line-to-line (1.0: no earlier line): saying nothing scores as high as stating facts
    assert base == pytest.approx([0.95, 0.95])
    out = specific(["x", "x"], [vague, concrete], profile=[PRIYA, PRIYA])
    assert out[0] == pytest.approx(0.95) and out[1] == pytest.approx(0.95 + 0.3)  # 3 attributes = the cap
    assert plain(["x"], [""], profile=[PRIYA]) == [0.0]  # an empty completion earns nothing


def test_reward_errors():
    reward = make_reward("prompt_to_line", RuleJudge())
    with pytest.raises(DataError, match="add a 'profile' column"):
        reward(PROMPTS, COMPLETIONS)
    with pytest.raises(DataError, match="must match one to one"):
        reward(PROMPTS, COMPLETIONS, profile=[PRIYA])
    with pytest.raises(ConfigError, match="unknown reward"):
        make_reward("vibes", RuleJudge())


def test_reward_with_a_real_judge(tiny_llm_judge):
    reward = make_reward("consistency", tiny_llm_judge)
    out = reward(PROMPTS, COMPLETIONS, profile=[PRIYA] * 3)
    assert len(out) == 3 and all(0.0 <= v <= 1.0 for v in out)
    assert reward(PROMPTS, COMPLETIONS, profile=[PRIYA] * 3) == pytest.approx(out)
