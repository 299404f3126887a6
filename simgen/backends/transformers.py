"""The local transformers backend: batched decoding of many chats in one forward pass per token.

Each call takes the chats of every active dialogue in the batch, applies the model's chat template,
left-pads them into one tensor, prefills them together and decodes token by token with a KV cache.
A row stops at an end-of-turn token or at `max_new_tokens`; the batch stops when all rows have.

Sampling is done here rather than by `model.generate`: temperature, top-p and min-p on fp32 logits, then
one draw per row from that row's own `torch.Generator`, seeded by the simulator from (run seed,
dialogue, turn, side). So a dialogue's tokens do not depend on the random state of its neighbours.
Temperature 0 is greedy. Within a batch of dialogues, a `KVSession` keeps each dialogue's KV cache
across turns, so a turn prefills only its new tokens, and its cache layers append in place into
buffers that grow geometrically (transformers' DynamicCache copies the whole cache on every token).
Inside a call, rows whose line has ended leave the forward batch once at most half of it still runs
(their keys/values wait aside and rejoin at the end), so short lines do not pay for the longest one.
A line the simulator draws again starts over inside the call that drew it, as soon as it ends (its
slots masked out, its next token drawn from its prompt's logits with the redraw's seed), beside the
rows still writing, instead of in a pass of its own after the call.
A row's `hold` test weighs its end-of-turn tokens: none while its length target is not reached
(`--reach-target`), more likely with every word past it (`--end-nudge`).
A session takes new rows beside its cached ones (a dialogue that took a finished one's slot: the
simulator refills the batch); a new row's whole prompt is prefilled in a pass of its own, beside the
other rows' few new tokens, so they are not padded to its length. What this leaves out:
torch.compile (the cache length changes every step, so a compiled graph would recompile or pad to a
fixed size), and sharing the prompt prefix dialogues have in common (5 tokens here: the persona comes first).
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from simgen.backends import Again, Backend, Hold, Session, Until, end_bias
from simgen.config import GenerateConfig, SamplingConfig
from simgen.data import Chat, Generation
from simgen.models import ModelSource, chat_token_ids, load_causal_lm, resolve_model


class TransformersBackend(Backend):
    name = "transformers"
    batched = True
    seeded = True
    scorer = True

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
        self.stats = {"prefill_tokens": 0, "decode_steps": 0, "decoded_rows": 0}  # work done, for benchmarks

    @classmethod
    def from_config(cls, config: GenerateConfig, model: str | None) -> TransformersBackend:
        return cls(model, config.dtype, config.trust_remote_code)

    @classmethod
    def precheck(cls, config: GenerateConfig, model: str | None) -> None:
        resolve_model(model, config.trust_remote_code)  # finds the files; loads nothing

    @property
    def device(self):  # noqa: ANN201
        return self.model.device

    # ---------------------------------------------------------------- the Scorer protocol (backends/scoring.py)

    @property
    def num_layers(self) -> int:
        from simgen.backends.scoring import decoder_layers

        return len(decoder_layers(self.model))

    def next_token_logprobs(self, chats: Sequence[Chat], keep: Sequence[int] | None = None, *, pass_tokens: int | None = None,
                            shared: bool = True) -> Any:
        from simgen.backends.packing import PASS_TOKENS
        from simgen.backends.scoring import next_token_logprobs

        return next_token_logprobs(self, chats, keep, pass_tokens=pass_tokens or PASS_TOKENS, shared=shared)

    def continuation_logprobs(self, items: Sequence[tuple[Chat, str]], *, pass_tokens: int | None = None,
                              shared: bool = True) -> list[tuple[float, int]]:
        from simgen.backends.packing import PASS_TOKENS
        from simgen.backends.scoring import continuation_logprobs

        return continuation_logprobs(self, items, pass_tokens=pass_tokens or PASS_TOKENS, shared=shared)

    def continuation_activations(self, items: Sequence[tuple[Chat, str]], layer: int, *, pass_tokens: int | None = None,
                                 shared: bool = True) -> Any:
        from simgen.backends.packing import PASS_TOKENS
        from simgen.backends.scoring import continuation_activations

        return continuation_activations(self, items, layer, pass_tokens=pass_tokens or PASS_TOKENS, shared=shared)

    def steer(self, layer: int, threshold: float, direction: Any) -> AbstractContextManager[None]:
        from simgen.backends.steering import persona_cap

        return persona_cap(self, layer, threshold, direction)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.source.describe(), "dtype": str(self.model.dtype).removeprefix("torch."),
                "attention": self.model.config._attn_implementation}

    def encode(self, chat: Chat) -> list[int]:
        """Token ids of a chat with the generation prompt of the next "assistant" message."""
        return chat_token_ids(self.tokenizer, chat, add_generation_prompt=True)

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        """Stateless: every chat is encoded and prefilled from scratch (a fresh session per call)."""
        with self.session(reuse_cache=False) as session:
            return session.generate(chats, sampling, seeds, keys=list(range(len(chats))))

    def session(self, reuse_cache: bool = True) -> KVSession:
        return KVSession(self, reuse_cache)


class KVSession(Session):
    """One side of one batch: a batched KV cache whose rows are dialogues, kept across turns.

    Each call encodes every chat, finds the longest prefix whose keys/values are already cached for
    that row, and prefills only the rest. Cached tokens that no longer match (the line was cleaned
    after generation, say) are masked out. Within a call the cache is append-only: its columns are
    physical slots, the attention mask says which slots a row may see, and RoPE positions count
    only a row's valid tokens. Between calls the masked slots are squeezed out. Rows of dialogues that ended are dropped from the
    cache. With `reuse_cache=False` the session forgets everything between calls (the reference path).

        mask (rows, slots)            1 where the slot holds a valid token of that row
        hist[row] / cols[row]         the row's valid tokens, and the slot of each
    """

    draws_again = True  # a line drawn again starts over in the call that drew it (`_decode`'s `again`)

    def __init__(self, backend: TransformersBackend, reuse_cache: bool = True) -> None:
        self.b = backend
        self.reuse_cache = reuse_cache
        self._reset([])

    def _reset(self, keys: list[Hashable]) -> None:
        import torch

        self.cache = growing_cache_class()()
        self.keys = list(keys)
        self.mask = torch.zeros((len(keys), 0), dtype=torch.long, device=self.b.device)
        self.hist: list[list[int]] = [[] for _ in keys]
        self.cols: list[list[int]] = [[] for _ in keys]

    def _select(self, keys: list[Hashable]) -> None:
        """Keep (and order) the cache rows of `keys`; a key it has never seen gets an empty row (a
        dialogue that took a finished one's slot); with no key it knows, start afresh."""
        import torch

        known = {k: i for i, k in enumerate(self.keys)} if self.reuse_cache else {}
        if not any(k in known for k in keys):
            self._reset(keys)
            return
        index = [known.get(k, -1) for k in keys]
        if index == list(range(len(self.keys))):
            return
        device = self.b.device
        if -1 not in index:  # rows kept and reordered: a gather
            rows = torch.tensor(index, device=device)
            if self.cache.get_seq_length() > 0:
                self.cache.batch_select_indices(rows)
            self.mask = self.mask[rows]
        else:  # new rows too: kept rows copied into place, new ones empty (masked) until their prefill
            at = torch.tensor([n for n, i in enumerate(index) if i >= 0], device=device)
            rows = torch.tensor([i for i in index if i >= 0], device=device)
            for layer in self.cache.layers if self.cache.get_seq_length() > 0 else ():
                layer.keys = stack_rows([(at, layer.keys[rows])], len(keys))
                layer.values = stack_rows([(at, layer.values[rows])], len(keys))
            mask = self.mask.new_zeros((len(keys), self.mask.shape[1]))
            mask[at] = self.mask[rows]
            self.mask = mask
        self.hist = [list(self.hist[i]) if i >= 0 else [] for i in index]
        self.cols = [list(self.cols[i]) if i >= 0 else [] for i in index]
        self.keys = list(keys)

    def close(self) -> None:
        self._reset([])

    def _compact(self) -> None:
        """Squeeze out masked slots (pads, stale tokens): rows become left-padded valid tokens.

        A dynamic cache copies itself on every appended token, so each slot it carries costs on
        every decoding step; compacting once per turn keeps it as short as the longest live chat.
        """
        import torch

        width = max((len(c) for c in self.cols), default=0)
        if width == self.mask.shape[1] or self.cache.get_seq_length() == 0:
            return
        device = self.b.device
        # (rows, width): the old slot that lands in each new slot; pads point at slot 0, masked
        source = torch.zeros((len(self.cols), width), dtype=torch.long)
        mask = torch.zeros((len(self.cols), width), dtype=torch.long)
        for row, cols in enumerate(self.cols):
            if cols:
                source[row, width - len(cols):] = torch.tensor(cols)
                mask[row, width - len(cols):] = 1
            self.cols[row] = list(range(width - len(cols), width))
        source = source.to(device)
        for layer in self.cache.layers:
            index = source[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
            layer.keys = layer.keys.gather(2, index)
            layer.values = layer.values.gather(2, index)
        self.mask = mask.to(device)

    def _prefill(self, rows: list[int], suffixes: list[list[int]], cache: Any, past: Any) -> tuple[Any, Any]:
        """Prefill `suffixes` (one per row of `rows`, left-padded into one chunk) on `cache`, whose
        rows are `rows` and `past` their mask: (last logits per row, the rows' mask with the chunk)."""
        import torch

        from torch.profiler import record_function

        b, device = self.b, self.b.device
        width, start = max(len(x) for x in suffixes), past.shape[1]
        chunk = torch.full((len(rows), width), b.pad_id, dtype=torch.long)
        chunk_mask = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, suffix) in enumerate(zip(rows, suffixes)):
            offset = width - len(suffix)
            chunk[i, offset:] = torch.tensor(suffix, dtype=torch.long)
            chunk_mask[i, offset:] = 1
            positions[i, offset:] = torch.arange(len(self.hist[row]), len(self.hist[row]) + len(suffix))
            self.hist[row].extend(suffix)
            self.cols[row].extend(range(start + offset, start + width))
        mask = torch.cat([past, chunk_mask.to(device)], dim=1)
        with record_function("simgen.prefill"):
            logits = b.model(input_ids=chunk.to(device), attention_mask=mask, position_ids=positions.to(device), use_cache=True,
                             logits_to_keep=1, **{b.cache_kwarg: cache}).logits[:, -1, :]
        return logits, mask

    def _join(self, short: list[int], mask_s: Any, long: list[int], mask_l: Any, side: Any, batch: int) -> Any:
        """Make the session's cache (rows `short`) and `side` (rows `long`) one cache of `batch` rows,
        each row at its own index; the narrower part is padded on the right with masked zeros. The mask."""
        import torch

        device = self.b.device
        width = max(mask_s.shape[1], mask_l.shape[1])
        at_s, at_l = torch.tensor(short, device=device), torch.tensor(long, device=device)
        for layer, other in zip(self.cache.layers, side.layers):
            layer.keys = stack_rows([(at_s, layer.keys), (at_l, other.keys)], batch)
            layer.values = stack_rows([(at_s, layer.values), (at_l, other.values)], batch)
        mask = mask_s.new_zeros((batch, width))
        mask[at_s, :mask_s.shape[1]] = mask_s
        mask[at_l, :mask_l.shape[1]] = mask_l
        return mask

    def _park(self, local: list[int], keep: list[int]) -> list[tuple[Any, Any]]:
        """Take the cache rows at positions `local` out of the forward batch (a copy of their
        keys/values per layer, returned), and keep the rows at positions `keep` in it."""
        import torch

        device = self.b.device
        out = torch.tensor(local, device=device)
        parked = [(layer.keys[out], layer.values[out]) for layer in self.cache.layers]
        self.cache.batch_select_indices(torch.tensor(keep, device=device))
        return parked

    def _unpark(self, parked: list[tuple[list[int], list[tuple[Any, Any]]]], fwd: list[int], batch: int) -> None:
        """Put the parked rows back beside the rows `fwd` still in the cache, each at its own row: the
        slots a parked row never saw are zeros that its mask hides, and `_compact` drops next call."""
        import torch

        device = self.b.device
        groups = [torch.tensor(fwd, device=device)] + [torch.tensor(rows, device=device) for rows, _ in parked]
        for n, layer in enumerate(self.cache.layers):
            layer.keys = stack_rows(list(zip(groups, [layer.keys] + [kv[n][0] for _, kv in parked])), batch)
            layer.values = stack_rows(list(zip(groups, [layer.values] + [kv[n][1] for _, kv in parked])), batch)

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
                 keys: Sequence[Hashable], until: Until = None, hold: Hold = None, again: Again = None) -> list[Generation]:
        if not chats:
            return []
        self._select(list(keys))
        return self._lines(chats, sampling, seeds, until, hold, again)

    def _lines(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int], until: Until,
               hold: Hold = None, again: Again = None) -> list[Generation]:
        """Decode `chats` on the session's rows as they are (row i is chat i)."""
        prompts = [self.b.encode(chat) for chat in chats]
        tokens, stopped = self._decode(prompts, sampling, seeds, until, hold, again)
        return [self._generation(ids, stop) for ids, stop in zip(tokens, stopped)]

    def _generation(self, ids: list[int], stop: str | None) -> Generation:
        return Generation(self.b.tokenizer.decode(ids, skip_special_tokens=True), n_tokens=len(ids), finish_reason=stop or "length")

    def redraw(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int],
               keys: Sequence[Hashable], until: Until = None, hold: Hold = None) -> list[Generation]:
        """`generate` on a copy of these rows' cache: the prompts are still cached (only the stale
        line is masked out), and the session's own state is restored afterwards, so the rows left
        out keep their cache and the next turn prefills only its new tokens."""
        if not chats:
            return []
        saved = (self.cache, self.mask, self.hist, self.cols, self.keys)
        try:
            if self.reuse_cache and self.keys and set(keys) <= set(self.keys) and self.cache.get_seq_length() > 0:
                import torch

                index = [self.keys.index(k) for k in keys]
                fork = copy.copy(self.cache)  # new layer objects whose tensors `batch_select_indices` replaces
                fork.layers = [copy.copy(layer) for layer in self.cache.layers]
                fork.batch_select_indices(torch.tensor(index, device=self.b.device))
                self.cache, self.mask = fork, self.mask[index]  # advanced indexing: a copy
                self.hist, self.cols = [list(self.hist[i]) for i in index], [list(self.cols[i]) for i in index]
                self.keys = list(keys)
            else:
                self._reset(list(keys))
            return self._lines(chats, sampling, seeds, until, hold)
        finally:
            self.cache, self.mask, self.hist, self.cols, self.keys = saved

    def _decode(self, prompts: list[list[int]], sampling: SamplingConfig, seeds: Sequence[int],
                until: Until = None, hold: Hold = None, again: Again = None) -> tuple[list[list[int]], list[str | None]]:
        """New token ids per prompt (stop token excluded) and why each row stopped before the cap:
        "stop" (an end-of-turn token), "until" (its `until` test held), None (it ran to the cap).
        A row's `hold` test weighs its end-of-turn tokens at every step (`end_bias`: -inf while it may
        not end yet, a positive bias past its target).

        With `again`, a row whose line ends is shown to it at once; given a new seed, the row starts
        over from its prompt in this same call: the slots of the line it wrote are masked out, it is
        fed a pad for one step, and its next token is drawn from the logits its prompt's prefill
        gave (kept for that), with a generator of the new seed. So a redraw rides along with the
        rows still writing instead of costing a pass of its own, and draws what a pass from the
        cached prompt would draw. A row may then run past `max_new_tokens` steps; each draw is
        still capped at that many tokens."""
        import torch

        from torch.profiler import record_function  # labels for `bench_generate.py --profile`; free when not profiling

        b, device = self.b, self.b.device
        with torch.inference_mode():
            # 1. per row: drop the cached tokens that no longer match, keep the new suffix
            suffixes = []
            for row, ids in enumerate(prompts):
                hist, n = self.hist[row], 0
                limit = min(len(hist), len(ids) - 1)  # always feed >= 1 token, to get logits
                while n < limit and hist[n] == ids[n]:
                    n += 1
                if n < len(hist):
                    self.mask[row, self.cols[row][n:]] = 0
                    del hist[n:], self.cols[row][n:]
                suffixes.append(ids[n:])
            self._compact()
            batch = len(prompts)
            b.stats["prefill_tokens"] += sum(len(x) for x in suffixes)
            generators = [seeded_generator(s) for s in seeds]
            stop = torch.tensor(sorted(b.stop_ids), device=device)
            seen = None  # (rows, vocab) bool: tokens already in each row's chat, for the penalty
            if sampling.penalty != 1.0:
                seen = torch.zeros((batch, b.model.config.vocab_size), dtype=torch.bool, device=device)
                for row, ids in enumerate(prompts):
                    seen[row, torch.tensor(ids, device=device)] = True
            # 2. prefill the suffixes, left-padded; rows whose suffix is far longer than the rest (a whole
            # prompt beside a turn's new tokens: a dialogue that just took a slot) in a pass of their own
            short, long = prefill_groups([len(x) for x in suffixes])
            if not long:
                logits, mask = self._prefill(short, suffixes, self.cache, self.mask)
            else:
                start = self.mask.shape[1]
                parked = self._park(long, short) if start else []
                side = growing_cache_class()()
                for n, (keys, values) in enumerate(parked):
                    side.update(keys, values, n)
                logits_s, mask_s = self._prefill(short, [suffixes[r] for r in short], self.cache, self.mask[short])
                logits_l, mask_l = self._prefill(long, [suffixes[r] for r in long], side, self.mask[long])
                mask = self._join(short, mask_s, long, mask_l, side, batch)
                logits = logits_s.new_empty((batch, logits_s.shape[-1]))
                logits[short], logits[long] = logits_s, logits_l
            first = logits.clone() if again else None  # where a row drawn again starts over
            prompt_len = [len(h) for h in self.hist]

            # 3. decode: one forward pass per token. `fwd` lists the rows in the forward batch (and in
            # the cache), in order; once at most COMPACT_AT of them are still running, the finished
            # ones leave it and their keys/values wait in `parked` until the call ends.
            new_tokens: list[list[int]] = [[] for _ in range(batch)]
            bias = [end_bias(hold[row]("")) if hold and hold[row] is not None else 0.0 for row in range(batch)]
            done = [False] * batch
            stopped: list[str | None] = [None] * batch
            fwd = list(range(batch))
            parked: list[tuple[list[int], list[tuple[Any, Any]]]] = []
            fresh: set[int] = set()  # rows drawn again: fed a pad this step, their prompt's logits the next

            def ended(row: int, why: str | None) -> None:
                """Row `row`'s line ended (`why`, as `stopped`): keep it, or start it over with `again`'s seed."""
                seed = again(row, self._generation(new_tokens[row], why)) if again else None
                if seed is None:
                    stopped[row], done[row], bias[row] = why, True, 0.0
                    return
                mask[row, self.cols[row][prompt_len[row]:]] = 0
                del self.hist[row][prompt_len[row]:], self.cols[row][prompt_len[row]:]
                new_tokens[row] = []
                generators[row] = seeded_generator(seed)
                bias[row] = end_bias(hold[row]("")) if hold and hold[row] is not None else 0.0
                if seen is not None:
                    i = fwd.index(row)
                    seen[i] = False
                    seen[i, torch.tensor(prompts[row], device=device)] = True
                fresh.add(row)

            while True:
                for row in fwd:  # a draw that ran to the cap (its last token was fed last step)
                    if not done[row] and row not in fresh and len(new_tokens[row]) >= sampling.max_new_tokens:
                        ended(row, None)
                if all(done[row] for row in fwd):
                    break
                if fresh:
                    restart = [fwd.index(row) for row in sorted(fresh)]
                    logits[torch.tensor(restart, device=device)] = first[torch.tensor(sorted(fresh), device=device)]
                    fresh.clear()
                if any(bias[row] for row in fwd):  # short of its target: may not end yet (-inf); past it: nudged to end
                    weighed = [i for i, row in enumerate(fwd) if bias[row]]
                    rows = torch.tensor(weighed, device=device)
                    add = torch.tensor([bias[fwd[i]] for i in weighed], dtype=logits.dtype, device=device)
                    logits[rows[:, None], stop[None, :]] += add[:, None]
                next_ids = pick_tokens(logits, sampling, [generators[row] for row in fwd], seen)  # (len(fwd),)
                if seen is not None:
                    seen[torch.arange(len(fwd), device=device), next_ids] = True
                is_stop = torch.isin(next_ids, stop).tolist()
                picked = next_ids.tolist()
                for i, row in enumerate(fwd):
                    if done[row]:
                        continue
                    if is_stop[i]:
                        ended(row, "stop")
                        continue
                    new_tokens[row].append(picked[i])
                    test = until[row] if until else None
                    floor = hold[row] if hold else None
                    if test is None and floor is None:
                        continue
                    text = b.tokenizer.decode(new_tokens[row], skip_special_tokens=True)
                    if test is not None and test(text):
                        ended(row, "until")  # the line is done; its last token is kept
                    elif floor is not None:
                        bias[row] = end_bias(floor(text))
                running = [i for i, row in enumerate(fwd) if not done[row]]
                if not running:
                    break
                if len(running) <= COMPACT_AT * len(fwd):
                    with record_function("simgen.compact"):
                        parked.append(([row for row in fwd if done[row]],
                                       self._park([i for i, row in enumerate(fwd) if done[row]], running)))
                    fwd = [fwd[i] for i in running]
                    keep = torch.tensor(running, device=device)
                    next_ids, picked = next_ids[keep], [picked[i] for i in running]
                    seen = seen[keep] if seen is not None else None
                # feed each running row its token; finished rows still in the batch feed a pad their mask hides
                fed_pad = [done[row] or row in fresh for row in range(batch)]
                slot, live = mask.shape[1], torch.tensor([not p for p in fed_pad], dtype=torch.long)
                step_positions = torch.zeros((len(fwd), 1), dtype=torch.long)
                for i, row in enumerate(fwd):
                    if not fed_pad[row]:
                        step_positions[i, 0] = len(self.hist[row])
                        self.hist[row].append(picked[i])
                        self.cols[row].append(slot)
                mask = torch.cat([mask, live.to(device)[:, None]], dim=1)
                fed = torch.tensor(fwd, device=device)
                b.stats["decode_steps"] += 1
                b.stats["decoded_rows"] += len(fwd)
                with record_function("simgen.decode_step"):
                    pads = torch.tensor([fed_pad[row] for row in fwd], device=device)
                    logits = b.model(input_ids=next_ids.masked_fill(pads, b.pad_id)[:, None],
                                     attention_mask=mask if len(fwd) == batch else mask[fed],
                                     position_ids=step_positions.to(device), use_cache=True,
                                     **{b.cache_kwarg: self.cache}).logits[:, -1, :]
            if parked:
                self._unpark(parked, fwd, batch)
            self.mask = mask
        return new_tokens, stopped


def seeded_generator(seed: int) -> Any:
    """A line's own CPU `torch.Generator`, seeded by the simulator's seed for it (63 bits)."""
    import torch

    return torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)


def stack_rows(parts: Sequence[tuple[Any, Any]], batch: int) -> Any:
    """One cache tensor (batch, heads, slots, dim) from `parts`, (row indices, their tensor): each part
    at its rows, one narrower than the widest padded on the right with zeros (slots its mask hides)."""
    first, width = parts[0][1], max(t.shape[2] for _, t in parts)
    out = first.new_zeros((batch, first.shape[1], width, first.shape[-1]))
    for rows, t in parts:
        out[rows, :, :t.shape[2]] = t
    return out


def prefill_groups(lengths: Sequence[int], pass_cost: int = 256) -> tuple[list[int], list[int]]:
    """Split rows into (short, long) for two prefill passes when that feeds far fewer padded tokens
    than one: each pass costs its rows x its longest suffix, plus `pass_cost` tokens. ([all], []) when not."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    one = len(lengths) * max(lengths, default=0)
    best, cut = one, len(order)
    for n in range(1, len(order)):
        cost = n * lengths[order[n - 1]] + (len(order) - n) * lengths[order[-1]] + pass_cost
        if cost < best:
            best, cut = cost, n
    if best > 0.75 * one:
        return list(range(len(lengths))), []
    return sorted(order[:cut]), sorted(order[cut:])


COMPACT_AT = 0.5  # a decoding call drops its finished rows once at most this share of its forward batch still runs


@functools.cache
def growing_cache_class() -> type:
    """A DynamicCache whose layers append in place into buffers that grow geometrically.

    transformers' DynamicLayer concatenates on every token, copying the whole cache each step: at
    64 rows x 1,000 tokens that is ~1.5 GB of copying per generated token for SmolLM2-135M. These
    layers write the new keys/values into spare capacity and hand attention a view of the used part.
    Anything that replaces `keys` (batch_select_indices, _compact's gather) is adopted as the new buffer.
    """
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):  # noqa: ANN001, ANN202
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._view = None
            if self.keys is not self._view or self.keys.numel() == 0:  # first call, or replaced from outside
                self._kbuf, self._vbuf, self._used = self.keys, self.values, self.keys.shape[-2] if self.keys.numel() else 0
            n, add = self._used, key_states.shape[-2]
            if self._kbuf.numel() == 0 or n + add > self._kbuf.shape[-2] or self._kbuf.shape[:2] != key_states.shape[:2]:
                cap = max(2 * n, n + add + 64)
                kbuf = key_states.new_empty((*key_states.shape[:2], cap, key_states.shape[-1]))
                vbuf = value_states.new_empty((*value_states.shape[:2], cap, value_states.shape[-1]))
                if n:
                    kbuf[:, :, :n] = self._kbuf[:, :, :n]
                    vbuf[:, :, :n] = self._vbuf[:, :, :n]
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[:, :, n:n + add] = key_states
            self._vbuf[:, :, n:n + add] = value_states
            self._used = n + add
            self.keys, self.values = self._kbuf[:, :, :self._used], self._vbuf[:, :, :self._used]
            self._view = self.keys
            return self.keys, self.values

    class GrowingCache(DynamicCache):
        def __init__(self) -> None:
            Cache.__init__(self, layer_class_to_replicate=GrowingLayer)

    return GrowingCache


NUCLEUS_FIRST = 256  # torch's path looks for the nucleus among each row's most likely tokens first; a full sort only when it is wider
# (at or above the vocabulary size: the whole vocabulary is sorted and drawn over, as before #15)
NUCLEUS_WIDE = 4096  # ... then, for the rows whose nucleus is wider, among that many (the tuned sides at temperature 1.0: ~30% of draws)
PICK_KERNEL = True  # draws run in the compiled kernel (`kernels.pick`) on a CPU where it builds; SIMGEN_PICK_KERNEL=0: torch's ops


def pick_tokens(logits, sampling: SamplingConfig, generators: list, seen=None) -> Any:  # noqa: ANN001
    """Next token per row: argmax when greedy, else temperature, top-p and min-p with each row's generator.

    `seen` (batch, vocab) marks tokens to penalise as in HF's repetition penalty: positive logits
    are divided by the penalty, negative ones multiplied.

    Top-p keeps the smallest set of most likely tokens whose mass reaches `top_p` (at least one);
    min-p keeps the tokens whose probability is at least `min_p` times the likeliest one's (Nguyen et
    al. 2024, as HF's `MinPLogitsWarper`). Both keep a prefix of the tokens by probability (ties in
    token id order), so the draw is made from the shorter prefix, renormalised: one uniform from
    the row's generator, and the token where the kept tokens' cumulative mass, summed in token id
    order, passes it.

    On a CPU the compiled kernel draws every row in one call (`kernels.pick`): it gathers the tokens
    heavy enough to be kept, finds the nucleus's edge with a histogram of them, and sorts only the
    tokens at the edge. torch's path (no compiler, a GPU, SIMGEN_PICK_KERNEL=0) finds the set among
    the row's NUCLEUS_FIRST most likely tokens (`topk`), then its NUCLEUS_WIDE, and sorts the row in
    full only when the set is wider still. The two draw the same tokens up to float rounding, which
    rarely moves a kept set's edge or a draw at a token's boundary.
    """
    import torch

    if sampling.greedy:
        return _penalised(logits.float(), sampling, seen).argmax(dim=-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    if logits.device.type == "cpu" and PICK_KERNEL and os.environ.get("SIMGEN_PICK_KERNEL", "1") != "0":
        from simgen.backends import kernels

        if kernels.decode_attention() is not None:
            x = logits if logits.dtype in (torch.bfloat16, torch.float32) else logits.float()
            return kernels.pick(x.contiguous(), None if seen is None else seen.contiguous(), sampling.penalty, sampling.heat,
                                sampling.top_p, sampling.min_p, u)
    probs = torch.softmax(_penalised(logits.float(), sampling, seen) / sampling.heat, dim=-1)
    min_p = sampling.min_p

    def keep(p):  # noqa: ANN001, ANN202  (probabilities sorted descending along the last dimension: a row, or rows)
        p = p.masked_fill((p.cumsum(-1) - p) >= sampling.top_p, 0.0) if sampling.top_p < 1.0 else p
        return p.masked_fill(p < min_p * p[..., :1], 0.0) if min_p else p

    def draw(top, ids, at):  # noqa: ANN001, ANN202
        """Rows of probabilities `top` (r, k), descending with ties in id order, and their token ids:
        each row's draw at its uniform `at` (r,), over its kept set in token id order."""
        kept = keep(top)
        key, by = torch.where(kept > 0, ids, probs.shape[-1]).sort(dim=-1)  # kept ids ascending, the rest after them
        mass = kept.gather(-1, by).double().cumsum(-1)
        j = torch.searchsorted(mass, (at * mass[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
        return key.gather(-1, torch.minimum(j, (kept > 0).sum(-1) - 1).unsqueeze(-1)).squeeze(-1)

    u = u.to(probs.device)
    if sampling.top_p >= 1.0 and not min_p:  # nothing cut: the vocabulary in id order
        mass = probs.double().cumsum(-1)
        j = torch.searchsorted(mass, (u * mass[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1)  # the last token with any mass
        return torch.minimum(j, last)
    if NUCLEUS_FIRST >= probs.shape[-1]:  # the whole vocabulary sorted (benchmarks' "before" row)
        return draw(*probs.sort(dim=-1, descending=True, stable=True), u)

    def wider(top):  # noqa: ANN001, ANN202  (rows whose kept set may reach past these top tokens: mass under top_p, the last still passing min-p)
        return ((top.sum(-1) < sampling.top_p) & (top[:, -1] >= min_p * top[:, 0])).nonzero().flatten().tolist()

    def by_id(top, ids):  # noqa: ANN001, ANN202  (topk's order, with tied probabilities in id order as the kernel puts them)
        ids, at = ids.sort(dim=-1)
        top, at = top.gather(-1, at).sort(dim=-1, descending=True, stable=True)
        return top, ids.gather(-1, at)

    picks = torch.empty(probs.shape[0], dtype=torch.int64, device=probs.device)
    rows = list(range(probs.shape[0]))
    for width in (NUCLEUS_FIRST, NUCLEUS_WIDE):  # the rows whose kept set lies among their `width` likeliest tokens, drawn together
        if not rows or width >= probs.shape[-1] or (width == NUCLEUS_WIDE and NUCLEUS_WIDE <= NUCLEUS_FIRST):
            continue
        top, ids = probs[rows].topk(width, dim=-1)
        wide = set(wider(top))
        here = [j for j in range(len(rows)) if j not in wide]
        if here:
            top, ids = top[here], ids[here]
            n = int((keep(top) > 0).sum(-1).max())  # the widest kept set, then through the tokens tied at its edge
            n = int((top >= top[:, n - 1:n]).sum(-1).max())
            picks[[rows[j] for j in here]] = draw(*by_id(top[:, :n], ids[:, :n]), u[[rows[j] for j in here]])
        rows = [rows[j] for j in sorted(wide)]
    for row in rows:  # wider still: sorted in full
        picks[row] = draw(*probs[row:row + 1].sort(dim=-1, descending=True, stable=True), u[row:row + 1])[0]
    return picks


def _penalised(logits, sampling: SamplingConfig, seen) -> Any:  # noqa: ANN001
    """HF's repetition penalty on float logits where `seen` (None: none)."""
    import torch

    if seen is None:
        return logits
    return torch.where(seen, torch.where(logits > 0, logits / sampling.penalty, logits * sampling.penalty), logits)


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
