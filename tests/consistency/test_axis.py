"""The persona axis: parsing the cap flag, fitting a direction, and the cap hook changing projections."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.config import SamplingConfig
from simgen.backends.steering import PersonaAxis, parse_persona_cap, persona_cap
from simgen.consistency.axis import fit_axis
from simgen.backends.scoring import capture_layer, continuation_activations
from simgen.errors import ConfigError

CHAT = [{"role": "system", "content": "You are Priya, 19, a student."}, {"role": "user", "content": "How can I help?"}]


def test_parse_persona_cap():
    assert parse_persona_cap("15:2.5") == (15, 2.5)
    assert parse_persona_cap(" -1:-0.75 ") == (-1, -0.75)
    for bad, match in (("15", "expected LAYER:THRESHOLD"), ("x:1", "layer 'x' is not an integer"),
                       ("3:high", "threshold 'high' is not a number"), ("3:nan", "finite"), ("", "expected LAYER:THRESHOLD")):
        with pytest.raises(ConfigError, match=match):
            parse_persona_cap(bad)


def test_fit_axis_points_from_persona_to_assistant(tmp_path):
    rng = np.random.default_rng(0)
    persona = rng.normal(0, 1, (40, 8)).astype(np.float32)
    assistant = rng.normal(0, 1, (30, 8)).astype(np.float32) + np.eye(8, dtype=np.float32)[2] * 5
    axis = fit_axis(persona, np.vstack([assistant, np.full((1, 8), np.nan, np.float32)]), layer=3, model="m")
    assert np.linalg.norm(axis.vector()) == pytest.approx(1.0, abs=1e-5)
    assert abs(axis.direction[2]) > 0.9
    assert axis.assistant_mean - axis.persona_mean == pytest.approx(5, abs=0.6)
    assert (axis.n_persona, axis.n_assistant) == (40, 30)  # the NaN row (an empty line) is left out
    assert axis.project(assistant).mean() > axis.midpoint > axis.project(persona).mean()
    assert PersonaAxis.load(axis.save(tmp_path / "axis.json")) == axis
    with pytest.raises(ConfigError, match="both sides"):
        fit_axis(persona, np.empty((0, 8), np.float32), 3)
    with pytest.raises(ConfigError, match="not a persona-axis file"):
        PersonaAxis.load(tmp_path / "nope.json")


def _direction(backend) -> np.ndarray:
    rng = np.random.default_rng(1)
    d = rng.normal(size=backend.model.config.hidden_size).astype(np.float32)
    return d / np.linalg.norm(d)


def test_cap_limits_every_token_projection_and_is_removed_on_exit(tiny_backend):
    import torch

    d = _direction(tiny_backend)
    ids = torch.tensor([tiny_backend.encode(CHAT)])
    with torch.inference_mode(), capture_layer(tiny_backend.model, 1) as before:
        logits_before = tiny_backend.model(input_ids=ids).logits
    proj = before[0][0].float().numpy() @ d  # (tokens,)
    threshold = float(np.quantile(proj, 0.5))  # half the tokens sit above it
    with torch.inference_mode(), persona_cap(tiny_backend, 1, threshold, d), capture_layer(tiny_backend.model, 1) as after:
        logits_capped = tiny_backend.model(input_ids=ids).logits
    capped = after[0][0].float().numpy() @ d
    assert capped.max() <= threshold + 1e-4
    below = proj <= threshold
    np.testing.assert_allclose(capped[below], proj[below], atol=1e-4)  # tokens under the cap are untouched
    assert (proj[~below] - capped[~below]).mean() > 1e-3  # measurably moved
    assert not torch.allclose(logits_before, logits_capped)
    with torch.inference_mode():
        assert torch.allclose(tiny_backend.model(input_ids=ids).logits, logits_before)  # hook gone


def test_cap_changes_turn_projections_and_generation(tiny_backend):
    d = _direction(tiny_backend)
    items = [(CHAT, "I am a nineteen year old student who loves comedies.")]
    base = continuation_activations(tiny_backend, items, 0) @ d
    threshold = float(base[0]) - 0.5
    with persona_cap(tiny_backend, 0, threshold, d):
        capped = continuation_activations(tiny_backend, items, 0) @ d
        gen_capped = tiny_backend.generate([CHAT], SamplingConfig(temperature=0, max_new_tokens=12), [0])[0].text
    assert capped[0] <= threshold + 1e-4 < base[0]
    gen = tiny_backend.generate([CHAT], SamplingConfig(temperature=0, max_new_tokens=12), [0])[0].text
    assert gen != gen_capped or capped[0] < base[0]  # the model's states moved; its greedy text usually does too


def test_cap_errors(tiny_backend):
    d = _direction(tiny_backend)
    with pytest.raises(ConfigError, match="out of range"):
        with persona_cap(tiny_backend, 7, 0.0, d):
            pass
    with pytest.raises(ConfigError, match="hidden size"):
        with persona_cap(tiny_backend, 0, 0.0, d[:5]):
            pass
    with pytest.raises(ConfigError, match="zero"):
        with persona_cap(tiny_backend, 0, 0.0, np.zeros_like(d)):
            pass
