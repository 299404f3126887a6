"""simgen's compiled kernels (simgen/backends/kernels.py, decode_attention.c), built with the
machine's C compiler: the decode attention kernel against torch's SDPA over each row's own valid
slots, the glue kernels against the transformers modules and torch ops they replace, and the
fallback to torch where the library cannot be built."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import simgen.backends.kernels as kernels


def _case(dtype, slots=7, heads=3, groups=3, dim=64, cap=96, seed=0):  # noqa: ANN001, ANN202
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(slots, heads, cap, dim, generator=gen).to(dtype)
    values = torch.randn(slots, heads, cap, dim, generator=gen).to(dtype)
    rows = torch.tensor([5, 0, 3, 6, 2])  # not in order, not all of them
    lens = torch.tensor([1, 96, 40, 73, 9])  # one slot, the whole capacity, and between
    q = torch.randn(len(rows), heads, groups, dim, generator=gen).to(dtype)
    return q, keys, values, rows, lens


def _reference(q, keys, values, rows, lens, scale):  # noqa: ANN001, ANN202  (SDPA per row over its own slots, float64)
    out = []
    for i, (row, n) in enumerate(zip(rows.tolist(), lens.tolist())):
        out.append(F.scaled_dot_product_attention(q[i:i + 1].double(), keys[row:row + 1, :, :n].double(),
                                                  values[row:row + 1, :, :n].double(), scale=scale)[0])
    return torch.stack(out)


@pytest.fixture(scope="module")
def built():
    if kernels.decode_attention() is None:
        pytest.fail("the kernel did not build on this machine (gcc with OpenMP is expected here, as in CI)")
    return True


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("groups,dim", [(3, 64), (2, 16)], ids=["smollm2-shape", "other-shape"])
def test_each_row_gets_sdpa_over_its_own_slots(built, dtype, tol, groups, dim):
    """Rows in any order, lengths from one slot to the whole capacity: the kernel's output is SDPA's
    over each row's valid slots (float64 reference), within float32 or bfloat16 rounding, on the
    shape it is specialised for (3 query heads of 64 per key/value head) and on any other."""
    q, keys, values, rows, lens = _case(dtype, groups=groups, dim=dim)
    scale = 0.125
    out = kernels.attend(q, keys, values, rows, lens, scale)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.double(), _reference(q, keys, values, rows, lens, scale), rtol=tol, atol=tol)
    # a row of one slot attends to that slot alone: its values, exactly (up to the dtype)
    torch.testing.assert_close(out[0].float(), values[5, :, :1].float().expand(-1, q.shape[2], -1), rtol=tol, atol=tol)


def test_a_rows_output_does_not_depend_on_the_others_or_the_threads(built):
    """Row i's output is the same bytes alone, beside other rows, and on one thread: a line's tokens
    stay a function of its prompt and seed, whatever company its row keeps."""
    q, keys, values, rows, lens = _case(torch.bfloat16, seed=1)
    together = kernels.attend(q, keys, values, rows, lens, 0.125)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = kernels.attend(q, keys, values, rows, lens, 0.125)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, single)
    for i in range(len(rows)):
        alone = kernels.attend(q[i:i + 1].contiguous(), keys, values, rows[i:i + 1], lens[i:i + 1], 0.125)
        assert torch.equal(alone[0], together[i])


def test_loading_it_leaves_the_processs_floating_point_alone(built):
    """The kernel is compiled with -ffast-math; a library *linked* so would flush subnormal floats to
    zero in the whole process at load (GCC's crtfastmath.o). Linked without it, subnormals survive
    in Python and in torch after the kernel is loaded and has run."""
    q, keys, values, rows, lens = _case(torch.float32)
    kernels.attend(q, keys, values, rows, lens, 0.125)
    tiny = 2.2250738585072014e-308  # the smallest normal double
    assert tiny / 2 > 0.0
    assert torch.tensor([1e-39], dtype=torch.float32).mul(0.5).item() > 0.0  # a float32 subnormal


def test_a_layout_it_does_not_read_is_refused(built):
    """The kernel reads raw pointers, so a strided view, a dtype mismatch or int32 indices are a
    ValueError before any memory is read."""
    q, keys, values, rows, lens = _case(torch.float32)
    with pytest.raises(ValueError, match="contiguous CPU tensors"):
        kernels.attend(q, keys[:, :, :50], values[:, :, :50], rows, lens, 0.125)  # a view of the cache
    with pytest.raises(ValueError, match="of q's dtype"):
        kernels.attend(q.to(torch.bfloat16), keys, values, rows, lens, 0.125)
    with pytest.raises(ValueError, match="int64"):
        kernels.attend(q, keys, values, rows.int(), lens, 0.125)


def test_without_a_compiler_it_says_why_once_and_gives_none(monkeypatch, tmp_path):
    """No compiler: a warning naming what is missing and what to install, once; None (the line
    schedule keeps SDPA). SIMGEN_KERNELS=0: None, silently."""
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc-simgen")
    with pytest.warns(RuntimeWarning, match="no C compiler 'no-such-cc-simgen'.*Install a C compiler"):
        assert kernels.decode_attention() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.decode_attention() is None  # remembered: no second warning
    assert not any(tmp_path.rglob("*.so"))
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("SIMGEN_KERNELS", "0")
    monkeypatch.delenv("CC")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.decode_attention() is None


def test_a_build_is_cached_by_source_and_a_changed_source_builds_again(monkeypatch, tmp_path):
    """The library is built once into the cache and reused; another source text gets its own."""
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    first = kernels._build(tmp_path / "kernels")
    stamp = first.stat().st_mtime_ns
    assert kernels._build(tmp_path / "kernels") == first and first.stat().st_mtime_ns == stamp
    changed = tmp_path / "decode_attention.c"
    changed.write_text(kernels.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(kernels, "SOURCE", changed)
    second = kernels._build(tmp_path / "kernels")
    assert second != first and second.exists()


# ---------------------------------------------------------------------------------------------
# The glue kernels: a layer's residual add and norm, rotary embedding and cache write, and the
# MLP's activation, against the transformers modules and torch ops they replace.

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rms_norm_is_the_residual_add_and_llamas_norm(built, dtype):
    """x += delta rounds as torch's add does (exactly the same bytes), and the norm is transformers'
    LlamaRMSNorm within one rounding of the dtype (a float32 sum ordered differently); with no
    delta, x is left alone."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = torch.Generator().manual_seed(2)
    norm = LlamaRMSNorm(96, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(96, generator=gen) / 4)
    norm = norm.to(dtype)
    x = (3 * torch.randn(5, 96, generator=gen)).to(dtype)
    delta = torch.randn(5, 96, generator=gen).to(dtype)
    expected_x = x + delta
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    out = kernels.add_rms_norm(x, delta, norm.weight.detach(), norm.variance_epsilon)
    assert torch.equal(x, expected_x)
    torch.testing.assert_close(out, norm(expected_x), rtol=tol, atol=tol)
    before = x.clone()
    torch.testing.assert_close(kernels.add_rms_norm(x, None, norm.weight.detach(), 1e-5), norm(before), rtol=tol, atol=tol)
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_store_rotates_and_writes_as_transformers_does(built, dtype):
    """A fused q/k/v output is split, queries and keys rotated as apply_rotary_pos_emb rotates them
    (each product and the sum rounded as torch rounds them: the same bytes), and each key and value
    written to its row and slot of the cache; no other slot changes."""
    from transformers.models.llama.modeling_llama import rotate_half

    gen = torch.Generator().manual_seed(3)
    t, heads, kv_heads, dim, slots, cap = 6, 6, 2, 16, 4, 10
    qkv = torch.randn(t, (heads + 2 * kv_heads) * dim, generator=gen).to(dtype)
    angles = torch.rand(t, dim // 2, generator=gen) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(dtype), torch.cat([angles.sin()] * 2, -1).to(dtype)
    rows, pos = torch.tensor([3, 3, 3, 0, 2, 1]), torch.tensor([4, 5, 6, 0, 9, 2])  # a prefill of three tokens, and single tokens
    keys, values = torch.randn(slots, kv_heads, cap, dim, generator=gen).to(dtype), torch.randn(slots, kv_heads, cap, dim, generator=gen).to(dtype)
    want_k, want_v = keys.clone(), values.clone()

    q = kernels.rope_store(qkv, cos, sin, keys, values, rows, pos, heads)

    q_ref, k_ref, v_ref = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], -1)
    q_ref, k_ref, v_ref = (x.reshape(t, -1, dim) for x in (q_ref, k_ref, v_ref))
    c, s = cos[:, None, :], sin[:, None, :]
    want_k[rows, :, pos] = k_ref * c + rotate_half(k_ref) * s
    want_v[rows, :, pos] = v_ref
    assert torch.equal(q, q_ref * c + rotate_half(q_ref) * s)
    assert torch.equal(keys, want_k) and torch.equal(values, want_v)


def test_rope_store_refuses_a_slot_outside_the_cache_and_writes_nothing(built):
    """A row or slot past the cache is a ValueError before any byte is written (the kernel writes
    through raw pointers)."""
    t, heads, kv_heads, dim = 2, 3, 1, 8
    qkv = torch.randn(t, (heads + 2 * kv_heads) * dim)
    cos, sin = torch.ones(t, dim), torch.zeros(t, dim)
    keys, values = torch.zeros(2, kv_heads, 4, dim), torch.zeros(2, kv_heads, 4, dim)
    for rows, pos in ((torch.tensor([0, 2]), torch.tensor([0, 1])), (torch.tensor([0, 1]), torch.tensor([0, 4])),
                      (torch.tensor([0, 1]), torch.tensor([-1, 0]))):
        with pytest.raises(ValueError, match="outside the cache"):
            kernels.rope_store(qkv, cos, sin, keys, values, rows, pos, heads)
        assert not keys.any() and not values.any()
    with pytest.raises(ValueError, match="rope_store"):  # int32 positions: the kernel reads int64
        kernels.rope_store(qkv, cos, sin, keys, values, torch.tensor([0, 1]), torch.tensor([0, 1], dtype=torch.int32), heads)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_silu_mul_is_the_mlps_activation(built, dtype, tol):
    """silu(gate) * up over a fused gate/up output, as LlamaMLP computes it (within one rounding:
    the kernel's exp is not torch's)."""
    gen = torch.Generator().manual_seed(4)
    gate_up = (4 * torch.randn(5, 2 * 48, generator=gen)).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(kernels.silu_mul(gate_up), F.silu(gate) * up, rtol=tol, atol=tol)


def test_the_glue_kernels_refuse_a_layout_they_do_not_read(built):
    """Strided views and mixed dtypes are a ValueError naming the tensors, before any pointer is passed."""
    x = torch.randn(4, 16)
    with pytest.raises(ValueError, match="add_rms_norm.*strided"):
        kernels.add_rms_norm(x.t(), None, torch.ones(4), 1e-5)
    with pytest.raises(ValueError, match="add_rms_norm.*bfloat16"):
        kernels.add_rms_norm(x, None, torch.ones(16, dtype=torch.bfloat16), 1e-5)
    with pytest.raises(ValueError, match="silu_mul.*strided"):
        kernels.silu_mul(torch.randn(16, 4).t())
    with pytest.raises(ValueError, match="silu_mul.*even"):
        kernels.silu_mul(torch.randn(4, 15))
    with pytest.raises(ValueError, match="add_rms_norm"):
        kernels.add_rms_norm(x, None, torch.ones(4, 4), 1e-5)
