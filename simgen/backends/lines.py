"""Line-level scheduling (`simgen generate --schedule lines`): a dialogue's next line starts as soon
as its last one ends, and both sides' lines share one batch.

The default schedule (`KVSession`, one call per side and turn) waits, at every step of a call, for
the longest line of the batch, and then for the other side: on a CPU a decoding step of a few rows
costs nearly what a full one does (the weights are read once per step either way), so the tail of
every call is paid at full price. Here a fixed number of rows (`slots`) decode lines, not
dialogues' turns: when a row's line ends, the simulator is told at once (`ended`), records it, and
queues the dialogue's next line (the other side's, or the first line of the next dialogue); the
next step prefills that line's new prompt tokens beside the rows still decoding. So rows are busy
until the run's lines run out.

What makes that cheap is a cache whose rows are independent: each row's keys/values are a prefix
of its own buffer row (`lens[row]` valid slots), written at the row's own positions, so a row can
start a line, be cut back to its prompt (a redraw) or take another dialogue's cache without
touching the others. A step is one packed forward pass over every token fed that step (one per
decoding row, a whole suffix per row starting a line), with the model's own weights: the weight
matmuls run over exactly those tokens, with no padding, each layer's q/k/v and gate/up projections
fused into one matmul each (`fuse_projections`); attention runs per prefilling row (SDPA) and
batched for the decoding ones: on a CPU through simgen's compiled kernel, each row over its own
length, with the layer's element-wise work (norms, rotary, cache writes, activation) in the same
library (`simgen.backends.kernels`; torch where it does not build, and on a GPU). Each dialogue
has two caches (its user-side chat and its assistant-side chat, keyed `(index, side)`); the one
not being written waits aside as a copy of its valid slots (`stash`) and is copied back into a
free row when that side's next line starts, where only the tokens past the longest cached prefix
are prefilled.

A line's tokens are a function of its prompt and seed (its own `torch.Generator`), whatever row
or step it ran in, so dialogue i is still a function of (seed, i); in float32 the lines are the
very ones the default schedule writes (tests/test_lines.py). Supported: decoder-only models with
Llama-style layers (Llama, SmolLM2, Qwen2, Mistral without a sliding window); `supports` says why
not otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simgen.backends import end_bias
from simgen.backends.transformers import seeded_generator
from simgen.config import SamplingConfig
from simgen.data import Generation

LLAMA_LIKE = ("llama", "qwen2", "mistral")
SHARE_PREFIXES = True  # a chat's first line starts from another cache's longest shared prefix (`LineEngine._take`)
FUSED_GEMMS = True  # each layer's q/k/v projections run as one matmul, and gate/up as one (`fuse_projections`); SIMGEN_FUSE=0 turns it off
FUSED_DECODE = True  # on a CPU, decoding rows attend through simgen's compiled kernel where it builds (`simgen.backends.kernels`), else SDPA


@dataclass
class LineRequest:
    """One line to write: the chat's token ids (`prompt`, generation prompt included) on the cache
    `key`, drawn with `seed`; `until`/`hold` as `Session.generate`'s per-row tests; `tag` is the
    caller's."""

    key: Hashable
    prompt: list[int]
    seed: int
    sampling: SamplingConfig
    until: Callable[[str], bool] | None = None
    hold: Callable[[str], Any] | None = None
    tag: Any = None


@dataclass
class _Row:
    req: LineRequest
    prompt_len: int = 0
    new: list[int] = field(default_factory=list)  # the line's tokens so far
    generator: Any = None
    bias: float = 0.0
    first: Any = None  # the logits the prompt's prefill gave: where a redraw starts over


def supports(backend: Any) -> str | None:
    """Why `backend` cannot run the line schedule, or None when it can."""
    from simgen.backends.transformers import TransformersBackend

    if type(backend) is not TransformersBackend:
        return f"backend {getattr(backend, 'name', type(backend).__name__)!r} is not the plain transformers backend"
    if why := model_problem(backend.model.config.to_dict()):
        return why
    if str(backend.device) != "cpu" and not str(backend.device).startswith("cuda"):
        return f"device {backend.device} is not cpu or cuda"
    return None


def model_problem(config: Mapping[str, Any]) -> str | None:
    """Why a model with this `config.json` cannot run the line schedule, or None: what `auto`
    reads before the model loads (`pipeline`), and `supports` on the loaded one."""
    kind = config.get("model_type")
    if kind not in LLAMA_LIKE:
        return f"the model's type {kind!r} is not one it runs ({', '.join(LLAMA_LIKE)})"
    if kind == "mistral" and config.get("sliding_window") and config.get("use_sliding_window", True):
        return "the model uses a sliding attention window"
    return None


class LineEngine:
    """Decodes lines on `slots` rows of one model until the caller has none left (`run`)."""

    def __init__(self, backend: Any, slots: int) -> None:
        import torch

        if why := supports(backend):
            raise ValueError(f"--schedule lines: {why}")
        self.b, self.slots = backend, slots
        cfg = backend.model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.layers = backend.model.model.layers[:cfg.num_hidden_layers]
        self.dtype, self.device = backend.model.dtype, backend.device
        self.cap = 0
        self.k: list[Any] = []
        self.v: list[Any] = []
        self.lens = [0] * slots
        self.hist: list[list[int]] = [[] for _ in range(slots)]
        self.stash: dict[Hashable, tuple[list[int], list[tuple[Any, Any]]]] = {}
        self.dropped: set[Hashable] = set()
        self.stop = torch.tensor(sorted(backend.stop_ids), device=self.device)
        fuse = FUSED_GEMMS and os.environ.get("SIMGEN_FUSE", "1") != "0"
        fresh = fuse and any(getattr(layer, "_simgen_fused", None) is None for layer in self.layers)
        self.fused = [fuse_projections(layer) if fuse else None for layer in self.layers]
        if fresh:
            _release_freed_memory()  # the modules' old weight storages, freed into malloc's heap
        self.kernel = None  # the decode attention kernel, where it applies and builds
        if FUSED_DECODE and str(self.device) == "cpu" and self.dtype in (torch.bfloat16, torch.float32):
            from simgen.backends.kernels import decode_attention

            self.kernel = decode_attention()
        # the rest of a layer's element-wise work in the same library: where it builds, the
        # projections are fused, and the model's norms and activation are the ones it computes
        self.glue = (self.kernel is not None and all(f is not None for f in self.fused) and getattr(cfg, "hidden_act", None) == "silu"
                     and all(hasattr(norm, "variance_epsilon") and getattr(norm, "bias", None) is None
                             for layer in self.layers for norm in (layer.input_layernorm, layer.post_attention_layernorm)))

    # ------------------------------------------------------------------ the cache
    def _reserve(self, need: int) -> None:
        """Make every row hold at least `need` slots (buffers grow geometrically, zero-filled)."""
        import torch

        if need <= self.cap:
            return
        cap = max(2 * self.cap, need + 64)
        shape = (self.slots, self.kv_heads, cap, self.head_dim)
        for layer in range(len(self.layers)):
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.cap:
                k[:, :, :self.cap] = self.k[layer]
                v[:, :, :self.cap] = self.v[layer]
                self.k[layer], self.v[layer] = k, v
            else:
                self.k.append(k)
                self.v.append(v)
        self.cap = cap

    def forget(self, key: Hashable) -> None:
        """The dialogue of `key` has ended: drop its cache (now, or, if a row is writing its line, as that line ends)."""
        if self.stash.pop(key, None) is None:
            self.dropped.add(key)

    def _put_aside(self, row: int, key: Hashable) -> None:
        """Keep a copy of `row`'s valid slots as `key`'s cache (unless its dialogue has ended); the row is free after."""
        if key in self.dropped:
            self.dropped.discard(key)
            return
        n = self.lens[row]
        self.stash[key] = (self.hist[row][:n], [(k[row, :, :n].clone(), v[row, :, :n].clone()) for k, v in zip(self.k, self.v)])

    def _take(self, row: int, req: LineRequest) -> list[int]:
        """Put `req.key`'s cache into `row`; the prompt tokens still to prefill (at least one).

        A chat with no cache yet (a side's first line) starts from the longest prefix of its prompt
        that another cache holds (`SHARE_PREFIXES`): every dialogue's assistant side opens with the
        same system prompt, so it is prefilled once per run, not once per dialogue. A cached key
        or value depends only on the tokens up to it, so the copy is what a prefill would compute."""
        hist, kv = self.stash.pop(req.key, ([], []))
        limit = len(req.prompt) - 1
        n = _common(hist, req.prompt, limit)
        donor, shared = (self._donor(req.prompt, limit) if not hist and SHARE_PREFIXES else (None, 0))
        self._reserve(len(req.prompt) + req.sampling.max_new_tokens + 1)
        if shared > n:  # another cache's prefix: a stashed copy's layers, or a row's slots (a row may be its own donor)
            n = shared
            kv = donor if not isinstance(donor, int) else [] if donor == row else [(k[donor], v[donor]) for k, v in zip(self.k, self.v)]
            self.b.stats["shared_tokens"] = self.b.stats.get("shared_tokens", 0) + n
        for (k, v), (sk, sv) in zip(zip(self.k, self.v), kv):
            k[row, :, :n] = sk[:, :n]
            v[row, :, :n] = sv[:, :n]
        self.lens[row], self.hist[row] = n, list(req.prompt[:n])
        return req.prompt[n:]

    def _donor(self, prompt: list[int], limit: int) -> tuple[Any, int]:
        """The cache holding the longest prefix of `prompt` (at most `limit` tokens): (a row, or a
        stashed copy's layers, and the prefix's length); (None, 0) if none shares a token."""
        best: tuple[Any, int] = (None, 0)
        candidates = [(r, self.hist[r], self.lens[r]) for r in range(self.slots)]
        candidates += [(layers, tokens, len(tokens)) for tokens, layers in self.stash.values()]
        for donor, tokens, valid in candidates:
            n = _common(tokens, prompt, min(valid, limit))
            if n > best[1]:
                best = (donor, n)
        return best

    # ------------------------------------------------------------------ one packed forward pass
    def _forward(self, feeds: list[tuple[int, list[int]]]) -> Any:
        """Feed each row its tokens at its next positions (one pass for all); the logits after each
        row's last token, (len(feeds), vocab)."""
        import torch
        import torch.nn.functional as F
        from transformers.models.llama.modeling_llama import rotate_half  # the same in every LLAMA_LIKE model

        from simgen.backends.kernels import add_rms_norm, attend, rope_store, silu_mul

        b, device = self.b, self.device
        model = b.model.model
        ids, rows, pos, last, decode, prefill = [], [], [], [], [], []
        for row, tokens in feeds:
            start = self.lens[row]
            if len(tokens) == 1:
                decode.append((row, len(ids)))
            else:
                prefill.append((row, len(ids), len(ids) + len(tokens), start))
            ids += tokens
            rows += [row] * len(tokens)
            pos += range(start, start + len(tokens))
            last.append(len(ids) - 1)
            self.hist[row] += tokens
            self.lens[row] = start + len(tokens)
        self._reserve(max(self.lens))
        t = len(ids)
        ids_t = torch.tensor(ids, device=device)
        rows_t = torch.tensor(rows, device=device)
        pos_t = torch.tensor(pos, device=device)
        x = model.embed_tokens(ids_t)  # (t, hidden)
        cos2, sin2 = (c[0] for c in model.rotary_emb(x[None], pos_t[None]))  # (t, head_dim)
        cos, sin = cos2[:, None, :], sin2[:, None, :]  # (t, 1, head_dim)
        if decode:
            dec = [r for r, _ in decode]
            dec_at = torch.tensor([i for _, i in decode], device=device)
        if decode and self.kernel is not None:
            # the kernel: each decoding row over its own valid slots, read in place
            dec_rows, dec_lens = torch.tensor(dec), torch.tensor([self.lens[r] for r in dec])
            scores = torch.empty(len(dec) * self.heads * self.cap, dtype=torch.float32)  # the kernel's scratch, shared by the layers
        elif decode:
            # SDPA over the decoding rows only, as wide as the longest of them: all rows as a view
            # when most decode, else a gathered copy of theirs (a step of few rows stays cheap)
            dec_width = max(self.lens[r] for r in dec)
            whole = 2 * len(dec) > self.slots
            dec_rows = torch.arange(self.slots, device=device) if whole else torch.tensor(dec, device=device)
            at = torch.tensor(dec, device=device) if whole else torch.arange(len(dec), device=device)  # the decoding rows in it
            valid = torch.tensor([max(self.lens[r], 1) for r in (range(self.slots) if whole else dec)], device=device)
            dec_mask = (torch.arange(dec_width, device=device)[None, :] < valid[:, None])[:, None, None, :]  # a free row: one slot, unused
        group = self.heads // self.kv_heads
        masks = [(torch.arange(s + (c - a), device=device)[None, :] <= (s + torch.arange(c - a, device=device))[:, None]).repeat(group, 1)
                 for _, a, c, s in prefill]
        pending = None  # with the glue kernels: a layer's MLP output, added to x by the next layer's norm
        for n, layer in enumerate(self.layers):
            attn, fused = layer.self_attn, self.fused[n]
            keys, values = self.k[n], self.v[n]
            if self.glue:  # the residual add, the norm, rotary and the cache write in simgen's kernels
                h = add_rms_norm(x, pending, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
                q = rope_store(F.linear(h, fused.qkv, fused.qkv_bias), cos2, sin2, keys, values, rows_t, pos_t, self.heads)
            else:
                h = layer.input_layernorm(x)
                if fused is not None:
                    q, k, v = F.linear(h, fused.qkv, fused.qkv_bias).split(fused.qkv_sizes, dim=-1)
                else:
                    q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
                q = q.view(t, self.heads, self.head_dim)
                k = k.view(t, self.kv_heads, self.head_dim)
                v = v.view(t, self.kv_heads, self.head_dim)
                q = q * cos + rotate_half(q) * sin
                k = k * cos + rotate_half(k) * sin
                keys[rows_t, :, pos_t] = k
                values[rows_t, :, pos_t] = v
            out = q.new_empty((t, self.heads, self.head_dim))
            # grouped-query attention without repeating keys/values: a key/value head's query heads
            # are attended as that many query positions (transformers' `pack_gqa`)
            if decode and self.kernel is not None:
                od = attend(q[dec_at].view(-1, self.kv_heads, group, self.head_dim), keys, values, dec_rows, dec_lens, attn.scaling, scores)
                out[dec_at] = od.view(-1, self.heads, self.head_dim)
            elif decode:
                qd = q.new_zeros((len(dec_rows), self.kv_heads, group, self.head_dim))
                qd[at] = q[dec_at].view(-1, self.kv_heads, group, self.head_dim)
                ks, vs = (keys[:, :, :dec_width], values[:, :, :dec_width]) if whole else \
                    (keys[dec_rows, :, :dec_width], values[dec_rows, :, :dec_width])
                od = F.scaled_dot_product_attention(qd, ks, vs, attn_mask=dec_mask, scale=attn.scaling)
                out[dec_at] = od[at].reshape(-1, self.heads, self.head_dim)
            for (row, a, c, s), mask in zip(prefill, masks):
                qp = q[a:c].view(c - a, self.kv_heads, group, self.head_dim).permute(1, 2, 0, 3).reshape(1, self.kv_heads, group * (c - a), self.head_dim)
                op = F.scaled_dot_product_attention(qp, keys[row:row + 1, :, :s + c - a], values[row:row + 1, :, :s + c - a],
                                                    attn_mask=mask, scale=attn.scaling)
                out[a:c] = op.view(self.kv_heads, group, c - a, self.head_dim).permute(2, 0, 1, 3).reshape(c - a, self.heads, self.head_dim)
            o = attn.o_proj(out.view(t, -1))
            if self.glue:
                h = add_rms_norm(x, o, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
                pending = layer.mlp.down_proj(silu_mul(F.linear(h, fused.gate_up, fused.gate_up_bias)))
                continue
            x = x + o
            h = layer.post_attention_layernorm(x)
            if fused is not None:
                gate, up = F.linear(h, fused.gate_up, fused.gate_up_bias).chunk(2, dim=-1)
                x = x + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
            else:
                x = x + layer.mlp(h)
        if pending is not None:
            x = x + pending
        hidden = model.norm(x[torch.tensor(last, device=device)])
        b.stats["decode_steps"] += 1
        b.stats["decoded_rows"] += len(decode)
        b.stats["prefill_tokens"] += sum(c - a for _, a, c, _ in prefill)
        return b.model.lm_head(hidden)

    # ------------------------------------------------------------------ the loop
    def run(self, next_line: Callable[[], LineRequest | None], ended: Callable[[LineRequest, Generation], int | None]) -> None:
        """Decode until `next_line` has nothing more and every row is free. Each line, as it ends, goes
        to `ended`, which answers with the seed of a new draw of it, or None to keep it (the caller
        then queues whatever lines follow, for `next_line`)."""
        import torch

        b = self.b
        state: list[_Row | None] = [None] * self.slots
        feed: dict[int, list[int]] = {}  # row -> tokens to feed next step
        pending: dict[int, Any] = {}  # row -> logits to draw from without a pass (a redraw's first token)
        seen: dict[int, Any] = {}  # row -> (vocab,) bool, tokens its chat holds, for the repetition penalty
        with torch.inference_mode():
            while True:
                for row in range(self.slots):
                    if state[row] is None and (req := next_line()) is not None:
                        state[row] = _Row(req, generator=seeded_generator(req.seed), bias=_first_bias(req))
                        feed[row] = self._take(row, req)
                        if req.sampling.penalty != 1.0:
                            seen[row] = _seen(req.prompt, b.model.config.vocab_size, self.device)
                if not feed and not pending:
                    if all(s is None for s in state):
                        return
                    raise RuntimeError("line engine: rows are busy but nothing is fed")  # a bug, not bad input
                order = list(feed)
                logits = self._forward([(row, feed[row]) for row in order]) if order else None
                for i, row in enumerate(order):
                    if len(feed[row]) > 1 or state[row].first is None:
                        state[row].prompt_len = self.lens[row]
                        state[row].first = logits[i].clone()
                feed.clear()
                drawn_rows = order + list(pending)
                rows_logits = [logits[i] for i in range(len(order))] + list(pending.values())
                pending.clear()
                picks = self._pick(drawn_rows, rows_logits, state, seen)
                for row, token in zip(drawn_rows, picks):
                    line = state[row]
                    if token in b.stop_ids:
                        self._ended(row, "stop", state, pending, seen, ended)
                        continue
                    line.new.append(token)
                    if row in seen:
                        seen[row][token] = True
                    req = line.req
                    if req.until is not None or req.hold is not None:
                        text = b.tokenizer.decode(line.new, skip_special_tokens=True)
                        if req.until is not None and req.until(text):
                            self._ended(row, "until", state, pending, seen, ended)
                            continue
                        if req.hold is not None:
                            line.bias = end_bias(req.hold(text))
                    if len(line.new) >= req.sampling.max_new_tokens:
                        self._ended(row, None, state, pending, seen, ended)
                        continue
                    feed[row] = [token]

    def _pick(self, rows: list[int], logits: list[Any], state: list[_Row | None], seen: dict[int, Any]) -> list[int]:
        """Draw each row's next token with its line's sampling and generator (rows grouped by sampling)."""
        import torch

        from simgen.backends.transformers import pick_tokens

        out: dict[int, int] = {}
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(id(state[row].req.sampling), []).append(i)
        for members in groups.values():
            sampling = state[rows[members[0]]].req.sampling
            block = torch.stack([logits[i] for i in members])
            biased = [j for j, i in enumerate(members) if state[rows[i]].bias]
            if biased:
                block = block.clone()
                for j in biased:
                    block[j, self.stop] += state[rows[members[j]]].bias
            mark = None
            if sampling.penalty != 1.0:
                mark = torch.stack([seen[rows[i]] for i in members])
            ids = pick_tokens(block, sampling, [state[rows[i]].generator for i in members], mark).tolist()
            for i, token in zip(members, ids):
                out[i] = token
        return [out[i] for i in range(len(rows))]

    def _ended(self, row: int, why: str | None, state: list[_Row | None], pending: dict, seen: dict,
               ended: Callable[[LineRequest, Generation], int | None]) -> None:
        """Row `row`'s line ended (`why`: "stop", "until", None = the token cap): keep it, or start over."""
        line = state[row]
        gen = Generation(self.b.tokenizer.decode(line.new, skip_special_tokens=True), n_tokens=len(line.new),
                         finish_reason=why or "length")
        seed = ended(line.req, gen)
        if seed is not None:  # drawn again: cut back to the prompt, first token from the prompt's logits
            self.lens[row] = line.prompt_len
            del self.hist[row][line.prompt_len:]
            line.new, line.generator, line.bias = [], seeded_generator(seed), _first_bias(line.req)
            if row in seen:
                seen[row] = _seen(line.req.prompt, self.b.model.config.vocab_size, self.device)
            pending[row] = line.first
            return
        self._put_aside(row, line.req.key)
        state[row] = None
        seen.pop(row, None)


@dataclass
class FusedProjections:
    """A layer's q/k/v weights as one matrix (`qkv`, split by `qkv_sizes`) and its MLP's gate/up
    weights as another; the modules' own weights are views into them, so memory is unchanged."""

    qkv: Any
    qkv_bias: Any
    qkv_sizes: tuple[int, int, int]
    gate_up: Any
    gate_up_bias: Any


def fuse_projections(layer: Any) -> FusedProjections | None:
    """Fuse `layer`'s q/k/v and gate/up projections (once: a layer already fused is found again), or
    None where they are not plain `nn.Linear`s of one dtype and device (an unmerged LoRA adapter)."""
    import torch

    attn, mlp = layer.self_attn, layer.mlp
    found = getattr(layer, "_simgen_fused", None)
    if found is not None:
        return found
    groups = [(attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)]
    for group in groups:
        weights = [m.weight for m in group if type(m) is torch.nn.Linear]
        if len(weights) < len(group) or len({(w.dtype, w.device, w.shape[1]) for w in weights}) != 1:
            return None
        if len({m.bias is None for m in group}) != 1:
            return None
    fused = []
    for group in groups:
        with torch.no_grad():
            weight = torch.cat([m.weight for m in group])
            bias = None if group[0].bias is None else torch.cat([m.bias for m in group])
            at = 0
            for m in group:  # the modules read views of the fused matrix: the old storage is freed
                size = m.weight.shape[0]
                m.weight.data = weight[at:at + size]
                if bias is not None:
                    m.bias.data = bias[at:at + size]
                at += size
        fused.append((weight, bias))
    (qkv, qkv_bias), (gate_up, gate_up_bias) = fused
    sizes = tuple(m.weight.shape[0] for m in groups[0])
    layer._simgen_fused = FusedProjections(qkv, qkv_bias, sizes, gate_up, gate_up_bias)
    return layer._simgen_fused


def _release_freed_memory() -> None:
    """Hand memory freed into glibc's heap back to the system (`malloc_trim`): the weights that
    `fuse_projections` replaced were freed there and would otherwise stay in the process's RSS
    (125 MB for SmolLM2-135M in bf16). A no-op without glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def _common(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens `a` and `b` share, at most `limit`."""
    n, limit = 0, min(limit, len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _first_bias(req: LineRequest) -> float:
    return end_bias(req.hold("")) if req.hold is not None else 0.0


def _seen(prompt: list[int], vocab: int, device: Any) -> Any:
    import torch

    mark = torch.zeros(vocab, dtype=torch.bool, device=device)
    mark[torch.tensor(prompt, device=device)] = True
    return mark
