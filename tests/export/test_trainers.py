"""Each RL format is proven by its consumer: TRL's SFTTrainer, DPOTrainer and GRPOTrainer run 1 step
on the tiny random Llama with the exported folder loaded by `datasets`; GRPO is rewarded by simgen's
make_reward (the tiny LLM judge). The tiny model learns nothing: the tests check that the data flows
through each trainer (tokenised, batched, a finite loss, an optimiser step), not what it learns.
"""

from __future__ import annotations

import math

import pytest

from simgen.export.rl import export_rl

pytestmark = pytest.mark.slow


def args(tmp_path):
    return dict(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2, report_to="none", use_cpu=True,
                bf16=False, logging_steps=1, save_strategy="no", seed=0)


def trained(trainer):
    out = trainer.train()
    logged = trainer.state.log_history[0]
    assert out.global_step == 1 and math.isfinite(logged["loss"])
    return logged


@pytest.mark.parametrize("policy", ["user", "assistant"])
def test_sft_trainer_trains_on_the_sft_export(run, tiny_model_dir, tmp_path, policy):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    export_rl(run, tmp_path / "sft", "sft", policy=policy)
    ds = load_dataset(str(tmp_path / "sft"))["train"]
    trainer = SFTTrainer(model=str(tiny_model_dir), args=SFTConfig(max_length=256, **args(tmp_path)), train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert trained(trainer)["num_tokens"] > 0


def test_dpo_trainer_trains_on_the_dpo_export(run, tiny_model_dir, tiny_judge_spec, tmp_path):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    export_rl(run, tmp_path / "dpo", "dpo", model=str(tiny_model_dir), judge=tiny_judge_spec, candidates=3, margin=0.0,
              max_prompts=4, dtype="float32")
    ds = load_dataset(str(tmp_path / "dpo"))["train"]
    assert ds.num_rows >= 2
    trainer = DPOTrainer(model=str(tiny_model_dir), args=DPOConfig(max_length=256, **args(tmp_path)), train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    logged = trained(trainer)
    assert "rewards/margins" in logged


def test_grpo_trainer_is_rewarded_by_simgen_on_the_prompt_export(run, tiny_model_dir, tiny_judge_spec, tmp_path):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from simgen.consistency import make_reward

    export_rl(run, tmp_path / "prompt", "prompt")
    ds = load_dataset(str(tmp_path / "prompt"))["train"]
    reward = make_reward("consistency", tiny_judge_spec, specificity_weight=0.3)
    calls = []

    def recorded(prompts, completions, **kwargs):
        calls.append(kwargs)
        return reward(prompts, completions, **kwargs)

    recorded.__name__ = reward.__name__
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[recorded], train_dataset=ds,
                          args=GRPOConfig(num_generations=2, max_completion_length=8, **args(tmp_path)),
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    logged = trained(trainer)
    assert 0.0 <= logged["rewards/simgen_consistency/mean"] <= 1.3
    assert calls and all(set(ds[0]["profile"]) == set(p) for p in calls[0]["profile"])  # the profile column reached the reward
