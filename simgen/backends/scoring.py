"""Scoring text with a local causal LM: next-token logits, option likelihoods, turn activations.

Every function takes a `TransformersBackend` (its `.model`, `.tokenizer`, `.encode`) and a batch of
chats, left-pads them into one tensor and runs one forward pass per batch of `batch_size` rows, in
inference mode. A *continuation* is text appended after the chat's generation prompt, i.e. the
next "assistant" message as the model would write it. This module does not generate text and does
not know what a persona or a judge is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from simgen.data import Chat
from simgen.errors import ConfigError


def continuation_ids(backend: Any, chat: Chat, text: str) -> tuple[list[int], int]:
    """(ids of chat + generation prompt + text, index where the text's tokens start)."""
    prompt = backend.encode(chat)
    return prompt + backend.tokenizer.encode(text, add_special_tokens=False), len(prompt)


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def _padded(backend: Any, rows: Sequence[list[int]]) -> tuple[Any, Any, Any]:
    """Left-padded (ids, mask, positions), each (batch, width), on the model's device."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), backend.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(backend.device), mask.to(backend.device), positions.to(backend.device)


def next_token_logprobs(backend: Any, chats: Sequence[Chat], batch_size: int = 8, keep: Sequence[int] | None = None) -> Any:
    """log-softmax of the first token the model would write after each chat: (len(chats), vocab), fp32 CPU.

    keep: token ids; only their columns are returned, (len(chats), len(keep)), so scoring many
    chats does not hold a vocabulary-wide row for each.
    """
    import torch

    out = []
    encoded = [backend.encode(c) for c in chats]
    with torch.inference_mode():
        for idx in _batches(len(encoded), batch_size):
            ids, mask, pos = _padded(backend, [encoded[i] for i in idx])
            logits = backend.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1, :]
            logp = torch.log_softmax(logits.float(), dim=-1)
            out.append((logp if keep is None else logp[:, list(keep)]).cpu())
    return torch.cat(out) if out else torch.empty((0, 0))


def continuation_logprobs(backend: Any, items: Sequence[tuple[Chat, str]], batch_size: int = 8) -> list[tuple[float, int]]:
    """(sum of token log-probs, token count) of each text continuing its chat.

    Items that share a chat (the options of one question) share one prefill of it: the chat runs
    once, its KV cache is repeated for the texts, and only the texts' tokens run after it.
    """
    groups: dict[int, list[int]] = {}  # first item with the same chat -> items
    keys: dict[str, int] = {}
    for i, (chat, _) in enumerate(items):
        key = repr(chat)
        groups.setdefault(keys.setdefault(key, i), []).append(i)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(items)
    for first, members in groups.items():
        prompt = backend.encode(items[first][0])
        texts = [backend.tokenizer.encode(items[i][1], add_special_tokens=False) for i in members]
        for idx in _batches(len(members), batch_size):
            for i, score in zip((members[j] for j in idx), _score_texts(backend, prompt, [texts[j] for j in idx])):
                out[i] = score
    return out


def _score_texts(backend: Any, prompt: list[int], texts: Sequence[list[int]]) -> list[tuple[float, int]]:
    """(sum log-prob, n) of each token list after one shared prompt: one prefill, one batched pass."""
    import torch
    from transformers import DynamicCache

    n = len(texts)
    width = max((len(t) for t in texts), default=0)
    if width == 0:
        return [(0.0, 0)] * n
    with torch.inference_mode():
        cache = DynamicCache()
        ids = torch.tensor([prompt], dtype=torch.long, device=backend.device)
        first = backend.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{backend.cache_kwarg: cache}).logits[:, -1, :]
        first = torch.log_softmax(first.float(), dim=-1)[0]  # (vocab,): the first text token's distribution
        cache.batch_repeat_interleave(n)
        # right-padded texts: (n, width); padding comes after every real token, so causality hides it
        body = torch.full((n, width), backend.pad_id, dtype=torch.long)
        mask = torch.ones((n, len(prompt) + width), dtype=torch.long)
        for row, t in enumerate(texts):
            body[row, :len(t)] = torch.tensor(t, dtype=torch.long)
            mask[row, len(prompt) + len(t):] = 0
        positions = torch.arange(len(prompt), len(prompt) + width)[None, :].expand(n, -1)
        logits = backend.model(input_ids=body.to(backend.device), attention_mask=mask.to(backend.device),
                               position_ids=positions.to(backend.device), use_cache=True, **{backend.cache_kwarg: cache}).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (n, width - 1, vocab): predicts tokens 1..
    out = []
    for row, t in enumerate(texts):
        if not t:
            out.append((0.0, 0))
            continue
        total = float(first[t[0]])
        if len(t) > 1:
            total += float(logp[row, torch.arange(len(t) - 1), torch.tensor(t[1:])].sum())
        out.append((total, len(t)))
    return out


def decoder_layers(model: Any) -> Any:
    """The model's stack of decoder layers (a ModuleList), for hooks."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and hasattr(decoder, "layers"):
        return decoder.layers
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__}; the persona axis needs a decoder-only transformer.")


def check_layer(model: Any, layer: int) -> int:
    """`layer` as a valid non-negative index into the decoder layers, or a ConfigError."""
    n = len(decoder_layers(model))
    if not isinstance(layer, int) or isinstance(layer, bool) or not (-n <= layer < n):
        raise ConfigError(f"layer {layer!r} is out of range: the model has {n} decoder layers (0..{n - 1}, or negative from the end).")
    return layer % n


@contextlib.contextmanager
def capture_layer(model: Any, layer: int) -> Iterator[list]:
    """Collect the residual stream (decoder layer `layer`'s output) of every forward pass into a list."""
    captured: list = []

    def hook(_module, _inputs, output):  # noqa: ANN001, ANN202
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden.detach())

    handle = decoder_layers(model)[check_layer(model, layer)].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def continuation_activations(backend: Any, items: Sequence[tuple[Chat, str]], layer: int, batch_size: int = 8) -> Any:
    """Mean residual-stream vector over each continuation's tokens at `layer`: (len(items), hidden) fp32 numpy.

    A continuation with no tokens gets a row of NaN.
    """
    import numpy as np
    import torch

    rows = [continuation_ids(backend, chat, text) for chat, text in items]
    hidden = backend.model.config.hidden_size
    out = np.full((len(rows), hidden), np.nan, dtype=np.float32)
    with torch.inference_mode(), capture_layer(backend.model, layer) as captured:
        for idx in _batches(len(rows), batch_size):
            batch = [rows[i] for i in idx]
            ids, mask, pos = _padded(backend, [r[0] for r in batch])
            captured.clear()
            backend.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
            states = captured[0].float()  # (batch, width, hidden)
            width = ids.shape[1]
            for row, (full, start) in zip(idx, batch):
                if len(full) > start:
                    offset = width - len(full)
                    out[row] = states[row - idx.start, offset + start: offset + len(full)].mean(0).cpu().numpy()
    return out
