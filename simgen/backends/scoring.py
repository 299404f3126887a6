"""Scoring text with a local causal LM: next-token logits, option likelihoods, turn activations.

Every function takes a `TransformersBackend` (its `.model`, `.tokenizer`, `.encode`) and many
sequences, lays them out as one token trie (`simgen.backends.packing`: shared prefixes run once,
a tree mask keeps every token's context its own) and streams it through the model in chunks of
`pass_tokens` tokens with a KV cache of what later tokens still read, in inference mode. A
*continuation* is text appended after the chat's generation prompt, i.e. the next "assistant"
message as the model would write it. `shared=False` runs every sequence alone, in one plain causal
pass (the reference the tests compare the packed path with). This module does not generate text
and does not know what a persona or a judge is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from simgen.backends.packing import PASS_TOKENS, pack
from simgen.data import Chat
from simgen.errors import ConfigError


def continuation_ids(backend: Any, items: Sequence[tuple[Chat, str]]) -> list[tuple[list[int], int]]:
    """Per (chat, text): (ids of chat + generation prompt + text, index where the text's tokens start).

    Each chat is rendered and tokenised once, however many texts continue it (a question's options).
    """
    prompts: dict[int, list[int]] = {}
    out = []
    for chat, text in items:
        prompt = prompts.get(id(chat))
        if prompt is None:
            prompt = prompts[id(chat)] = backend.encode(chat)
        out.append((prompt + backend.tokenizer.encode(text, add_special_tokens=False), len(prompt)))
    return out


class _Stop(Exception):
    """Raised by a layer hook once the layer a caller wants has run: the rest of the model is skipped."""


def _stream(backend: Any, sequences: Sequence[list[int]], want: Sequence[Sequence[int]], pass_tokens: int, shared: bool,
            stop_at: int | None = None) -> Iterator[tuple[list[tuple[int, int]], Any]]:
    """Run `sequences` through the model and yield, pass by pass, (pairs, outputs): `pairs` are
    (sequence index, position) among those in `want[i]`, `outputs` their rows: logits (n, vocab)
    fp32, or with `stop_at` the residual stream at that decoder layer's output (n, hidden), the
    layers above it skipped.

    Shared: one trie, streamed in chunks (packing.Trie.chunks). Not shared: each sequence alone, one
    plain causal pass (no mask, no cache). Counts the work in `backend.stats`.
    """
    if shared and backend.model.config._attn_implementation not in ("sdpa", "eager"):
        shared = False  # e.g. flash attention takes no tree mask: every sequence runs alone
    stats = backend.stats
    for key in ("scored_tokens", "packed_tokens", "passes"):
        stats.setdefault(key, 0)
    stats["scored_tokens"] += sum(len(s) for s in sequences)
    if not shared:
        for i, seq in enumerate(sequences):
            if len(want[i]):
                stats["packed_tokens"] += len(seq)
                stats["passes"] += 1
                yield [(i, int(j)) for j in want[i]], _run(backend, seq, range(len(seq)), want[i], None, None, stop_at)
        return
    trie = pack(sequences)
    stats["packed_tokens"] += len(trie)
    wanted: dict[int, list[tuple[int, int]]] = {}  # slot -> the (sequence, position) pairs that read its output
    for i, positions in enumerate(want):
        for j in positions:
            wanted.setdefault(int(trie.paths[i][j]), []).append((i, int(j)))
    from transformers import DynamicCache

    cache = DynamicCache()
    for c in trie.chunks(pass_tokens):
        stats["passes"] += 1
        slots = [s for s in range(c.start, c.stop) if s in wanted]
        out = _run(backend, trie.ids[c.start:c.stop].tolist(), trie.positions[c.start:c.stop].tolist(),
                   [s - c.start for s in slots], c.mask, cache, stop_at)
        _trim(cache, c)
        if slots:
            rows = [row for row, s in enumerate(slots) for _ in wanted[s]]
            yield [pair for s in slots for pair in wanted[s]], out[rows]


def _trim(cache: Any, c: Any) -> None:
    """After chunk `c`, keep only the cache entries that a later slot reads (`c.kept`)."""
    if len(c.kept) == len(c.cached) + c.stop - c.start:
        return
    import torch

    index = torch.as_tensor(c.kept, dtype=torch.long)
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            index = index.to(layer.keys.device)
            layer.keys = layer.keys.index_select(2, index)
            layer.values = layer.values.index_select(2, index)


def _run(backend: Any, ids: list[int], positions: list[int], rows: Sequence[int], mask: np.ndarray | None, cache: Any,
         stop_at: int | None) -> Any:
    """One forward pass of `ids` (after `cache`, if any, under the bool `mask` of shape (queries, keys)):
    the logits of `rows` ((len(rows), vocab) fp32), or with `stop_at` their residual stream at that layer."""
    import torch

    device = backend.device
    kwargs: dict[str, Any] = {"input_ids": torch.tensor([ids], dtype=torch.long, device=device),
                              "position_ids": torch.tensor([positions], dtype=torch.long, device=device)}
    if cache is not None:
        kwargs |= {"use_cache": True, backend.cache_kwarg: cache}
    else:
        kwargs["use_cache"] = False
    if mask is not None:
        visible = torch.from_numpy(mask).to(device)[None, None]
        if backend.model.config._attn_implementation == "eager":
            dtype = backend.model.dtype
            kwargs["attention_mask"] = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)
        else:
            kwargs["attention_mask"] = visible
    at = torch.as_tensor(list(rows), dtype=torch.long, device=device)
    if stop_at is not None:
        with capture_layer(backend.model, stop_at, stop=True) as captured, contextlib.suppress(_Stop):
            backend.model(logits_to_keep=1, **kwargs)
        return captured[0][0].float()[at]
    if len(at) == 0:
        at = torch.tensor([len(ids) - 1], device=device)  # the pass must still run, for the cache
    return backend.model(logits_to_keep=at, **kwargs).logits[0].float()


def next_token_logprobs(backend: Any, chats: Sequence[Chat], keep: Sequence[int] | None = None, *,
                        pass_tokens: int = PASS_TOKENS, shared: bool = True) -> Any:
    """log-softmax of the first token the model would write after each chat: (len(chats), vocab), fp32 CPU.

    keep: token ids; only their columns are returned, (len(chats), len(keep)), so scoring many
    chats does not hold a vocabulary-wide row for each.
    """
    import torch

    encoded = [backend.encode(c) for c in chats]
    out = None
    with torch.inference_mode():
        for pairs, logits in _stream(backend, encoded, [[len(e) - 1] for e in encoded], pass_tokens, shared):
            logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            logp = (logp if keep is None else logp[:, list(keep)]).cpu()
            if out is None:
                out = torch.empty((len(encoded), logp.shape[1]))
            out[[i for i, _ in pairs]] = logp
    return out if out is not None else torch.empty((0, 0))


def continuation_logprobs(backend: Any, items: Sequence[tuple[Chat, str]], *, pass_tokens: int = PASS_TOKENS,
                          shared: bool = True) -> list[tuple[float, int]]:
    """(sum of token log-probs, token count) of each text continuing its chat.

    Items that share a chat (the options of one question) or a chat's beginning (questions at
    successive checkpoints of one dialogue) share the computation of what they have in common.
    """
    import torch

    rows = continuation_ids(backend, items)
    totals = [0.0] * len(items)
    with torch.inference_mode():
        # the logits at position j predict token j + 1: read those before each text token
        want = [range(start - 1, len(ids) - 1) for ids, start in rows]
        for pairs, logits in _stream(backend, [ids for ids, _ in rows], want, pass_tokens, shared):
            targets = torch.tensor([rows[i][0][j + 1] for i, j in pairs], device=logits.device)
            picked = (logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)).tolist()
            for (i, _), v in zip(pairs, picked):
                totals[i] += v
    return [(totals[i], len(ids) - start) for i, (ids, start) in enumerate(rows)]


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
def capture_layer(model: Any, layer: int, stop: bool = False) -> Iterator[list]:
    """Collect the residual stream (decoder layer `layer`'s output) of every forward pass into a list.

    stop: raise `_Stop` right after capturing, so the layers above are not run (the caller catches it).
    """
    captured: list = []

    def hook(_module, _inputs, output):  # noqa: ANN001, ANN202
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden.detach())
        if stop:
            raise _Stop

    handle = decoder_layers(model)[check_layer(model, layer)].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def continuation_activations(backend: Any, items: Sequence[tuple[Chat, str]], layer: int, *, pass_tokens: int = PASS_TOKENS,
                             shared: bool = True) -> Any:
    """Mean residual-stream vector over each continuation's tokens at `layer`: (len(items), hidden) fp32 numpy.

    A continuation with no tokens gets a row of NaN. The lines of one dialogue, each its chat so far
    plus the line, share one pass over the dialogue's last chat (chats are append-only); where a
    chat is not a prefix of the next (a template that renders earlier turns differently), the trie
    simply branches there and the rest runs on its own.
    """
    import torch

    layer = check_layer(backend.model, layer)
    rows = continuation_ids(backend, items)
    sums = torch.zeros((len(rows), backend.model.config.hidden_size), dtype=torch.float64)
    with torch.inference_mode():
        want = [range(start, len(ids)) for ids, start in rows]
        for pairs, states in _stream(backend, [ids for ids, _ in rows], want, pass_tokens, shared, stop_at=layer):
            sums.index_add_(0, torch.tensor([i for i, _ in pairs]), states.double().cpu())
    counts = np.array([len(ids) - start for ids, start in rows], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (sums.numpy() / counts[:, None]).astype(np.float32)
