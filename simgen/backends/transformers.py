"""The local transformers backend: batched decoding of many chats in one forward pass per token.

Each call takes the chats of every active dialogue in the batch, applies the model's chat template,
left-pads them into one tensor, prefills them together and decodes token by token with a KV cache.
A row stops at an end-of-turn token or at `max_new_tokens`; the batch stops when all rows have.

Sampling is done here rather than by `model.generate`: temperature and top-p on fp32 logits, then
one draw per row from that row's own `torch.Generator`, seeded by the simulator from (run seed,
dialogue, turn, side). So a dialogue's tokens do not depend on the random state of its neighbours.
Temperature 0 is greedy. What this leaves out: keeping the KV cache across turns (each call
re-encodes the whole chat) and refilling rows as they finish.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from simgen.backends import Backend
from simgen.config import SamplingConfig
from simgen.data import Chat, Generation
from simgen.models import ModelSource, load_causal_lm, resolve_model


class TransformersBackend(Backend):
    name = "transformers"
    batched = True
    seeded = True
    logprobs = True

    def __init__(self, model: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
                 source: ModelSource | None = None) -> None:
        self.source = source or resolve_model(model, trust_remote_code)
        self.model, self.tokenizer = load_causal_lm(self.source, dtype, trust_remote_code)
        self.stop_ids = _stop_token_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.stop_ids)
        # transformers 5.x renamed `past_key_values` to `cache`; pass whichever this version takes
        params = inspect.signature(self.model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self):  # noqa: ANN201
        return self.model.device

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.source.describe(), "dtype": str(self.model.dtype).removeprefix("torch.")}

    def encode(self, chat: Chat) -> list[int]:
        """Token ids of a chat with the generation prompt of the next "assistant" message."""
        out = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "input_ids"):  # BatchEncoding in newer transformers
            out = out["input_ids"]
        return list(out)

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        if not chats:
            return []
        prompts = [self.encode(chat) for chat in chats]
        tokens, finished = self.decode(prompts, sampling, seeds)
        out = []
        for ids, stopped in zip(tokens, finished):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            out.append(Generation(text, n_tokens=len(ids), finish_reason="stop" if stopped else "length"))
        return out

    def decode(self, prompts: list[list[int]], sampling: SamplingConfig, seeds: Sequence[int]) -> tuple[list[list[int]], list[bool]]:
        """New token ids per prompt (stop token excluded) and whether each row stopped on its own."""
        import torch

        with torch.inference_mode():
            batch, width = len(prompts), max(len(p) for p in prompts)
            input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((batch, width), dtype=torch.long)
            for row, ids in enumerate(prompts):  # left padding: (batch, width)
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                mask[row, width - len(ids):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            input_ids, mask, positions = (t.to(self.device) for t in (input_ids, mask, positions))
            generators = [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in seeds]
            stop = torch.tensor(sorted(self.stop_ids), device=self.device)
            seen = None  # (batch, vocab) bool: tokens already in each row's chat, for the penalty
            if sampling.repetition_penalty != 1.0:
                seen = torch.zeros((batch, self.model.config.vocab_size), dtype=torch.bool, device=self.device)
                seen.scatter_(1, input_ids, mask.bool())

            from transformers import DynamicCache

            cache = DynamicCache()
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                use_cache=True, logits_to_keep=1, **{self.cache_kwarg: cache}).logits[:, -1, :]
            new_tokens: list[list[int]] = [[] for _ in range(batch)]
            done = torch.zeros(batch, dtype=torch.bool, device=self.device)
            stopped = [False] * batch
            for _ in range(sampling.max_new_tokens):
                next_ids = pick_tokens(logits, sampling, generators, seen)  # (batch,)
                if seen is not None:
                    seen[torch.arange(batch, device=self.device), next_ids] = True
                is_stop = torch.isin(next_ids, stop)
                for row in (~done).nonzero().flatten().tolist():
                    if is_stop[row]:
                        stopped[row] = True
                    else:
                        new_tokens[row].append(int(next_ids[row]))
                done |= is_stop
                if bool(done.all()):
                    break
                next_ids = next_ids.masked_fill(done, self.pad_id)
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=self.device)], dim=1)
                positions = positions[:, -1:] + 1
                logits = self.model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=positions,
                                    use_cache=True, **{self.cache_kwarg: cache}).logits[:, -1, :]
        return new_tokens, stopped


def pick_tokens(logits, sampling: SamplingConfig, generators: list, seen=None) -> Any:  # noqa: ANN001
    """Next token per row: argmax when greedy, else temperature + top-p with each row's generator.

    `seen` (batch, vocab) marks tokens to penalise as in HF's repetition penalty: positive logits
    are divided by the penalty, negative ones multiplied.
    """
    import torch

    logits = logits.float()
    if seen is not None:
        penalised = torch.where(logits > 0, logits / sampling.repetition_penalty, logits * sampling.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    probs = probs.cpu()
    picks = [torch.multinomial(probs[row], 1, generator=generators[row]) for row in range(probs.shape[0])]
    return torch.cat(picks).to(logits.device)


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the tokenizer's eos, the model's eos and the usual chat end markers."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None), model.config.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return ids
