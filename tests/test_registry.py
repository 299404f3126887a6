"""Every registered backend, judge and check meets one contract, built only through its registry.

The transformers backend runs the tiny random Llama; the openai backend talks to llama.cpp's real
server (xllamacpp) serving the embedded GGUF. The judges' registry contract is in
tests/consistency/test_judges.py, beside their fixtures.
"""

from __future__ import annotations

import polars as pl
import pytest

from simgen.backends import REGISTRY, Backend, backend_class, build_backend
from simgen.config import GenerateConfig, SamplingConfig, ServerConfig
from simgen.errors import ConfigError, DataError

CHATS = [
    [{"role": "system", "content": "You are Ann."}, {"role": "user", "content": "Hi there, what do you like?"}],
    [{"role": "user", "content": "Tell me about movies."}],
]
GREEDY = SamplingConfig(temperature=0, max_new_tokens=6, repetition_penalty=1.0)


def config_for(name: str, request: pytest.FixtureRequest) -> tuple[GenerateConfig, str]:
    """A GenerateConfig that selects backend `name`, and the model it serves."""
    if name == "transformers":
        model = str(request.getfixturevalue("tiny_model_dir"))
        return GenerateConfig(backend=name, model=model, dtype="float32"), model
    if name == "openai":
        server = ServerConfig(base_url=request.getfixturevalue("llamacpp"), concurrency=2)
        return GenerateConfig(backend=name, server=server, model="smollm2"), "smollm2"
    raise AssertionError(f"a new backend {name!r} needs its settings here, so it meets the same contract")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_backend_meets_the_contract(name, request):
    config, model = config_for(name, request)
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name
    prebuilt = cls.precheck(config, model)
    backend = prebuilt or build_backend(config, model)
    try:
        assert backend.describe()["backend"] == name
        out = backend.generate(CHATS, GREEDY, [1, 2])
        assert len(out) == len(CHATS)
        assert all(isinstance(g.text, str) and g.error is None and g.finish_reason in ("stop", "length") for g in out)
        with backend.session() as session:  # a session answers as the backend does
            again = session.generate(CHATS, GREEDY, [1, 2], ["a", "b"])
        assert [g.text for g in again] == [g.text for g in out]
        if backend.scorer:  # the Scorer protocol, with the shapes it declares
            assert backend.num_layers >= 1
            assert tuple(backend.next_token_logprobs(CHATS, keep=[0, 1]).shape) == (2, 2)
            scores = backend.continuation_logprobs([(CHATS[0], "I like films."), (CHATS[1], "Sure.")])
            assert len(scores) == 2 and all(n > 0 and total < 0 for total, n in scores)
            acts = backend.continuation_activations([(CHATS[0], "I like films.")], layer=0)
            assert acts.shape == (1, backend.model.config.hidden_size)
            with backend.steer(0, 0.0, [1.0] + [0.0] * (backend.model.config.hidden_size - 1)):
                backend.generate(CHATS[:1], GREEDY, [1])
    finally:
        backend.close()


def test_unknown_backend_names_say_what_exists():
    with pytest.raises(ConfigError, match=r"unknown backend 'transfomers'\. Did you mean 'transformers'\?.*'openai', 'transformers'"):
        backend_class("transfomers")
    with pytest.raises(ConfigError, match="unknown backend 'vllm'"):
        GenerateConfig(backend="vllm")


def test_the_callable_backend_is_built_from_a_function_not_by_name():
    from simgen.backends.callable import CallableBackend

    assert "callable" not in REGISTRY
    with pytest.raises(ConfigError, match="cannot be chosen with --backend"):
        CallableBackend.from_config(GenerateConfig(), None)


# ---------------------------------------------------------------- checks


def test_every_registered_check_declares_its_contract():
    from simgen.checks import REGISTRY as CHECKS
    from simgen.checks import SIDECAR_KEYS, Check, check_class, registered

    assert [c.name for c in registered()] == list(CHECKS)
    for check in registered():
        assert issubclass(check, Check) and set(SIDECAR_KEYS) <= set(check.reads)
        assert check.reports and all(r.endswith((".json", ".html")) for r in check.reports)
        with pytest.raises(DataError, match=rf"no 'text' column, which the {check.name} check reads"):
            check.validate(pl.LazyFrame({"dialogue_id": ["d0"], "turn": [0], "role": ["user"]}), "frame")
    with pytest.raises(DataError, match="unknown check 'realsim'. Did you mean 'realism'"):
        check_class("realsim")


def test_a_new_check_is_one_class_and_one_registry_line(tiny_model_dir, tmp_path, monkeypatch):
    """A check registered at run time: `export hub` copies its report and attaches its sidecar per turn and per dialogue."""
    import json
    import sys
    import types

    import simgen
    from simgen.checks import REGISTRY, Check
    from simgen.export.hub import export_hub
    from simgen.files import atomic_write_json, atomic_write_parquet

    class LengthCheck(Check):
        name = "length"
        reads = ("dialogue_id", "turn", "role", "text")
        sidecar = "length.parquet"
        reports = ("length.json",)

        def run(self, run, **options):
            self.validate(run.scan(), str(run.path))
            lines = run.scan().filter(pl.col("role") == "user").select(
                "dialogue_id", "turn", pl.col("text").str.len_chars().alias("chars")).collect()
            atomic_write_parquet(run.path / self.sidecar, lines)
            report = {"check": self.name, "mean_chars": float(lines["chars"].mean())}
            (run.path / "reports").mkdir(exist_ok=True)
            atomic_write_json(run.path / "reports" / "length.json", report)
            return report

        @classmethod
        def summary(cls, sidecar):
            return sidecar.group_by("dialogue_id").agg(pl.col("chars").mean().alias("mean_chars"))

    module = types.ModuleType("simgen_test_length_check")
    module.LengthCheck = LengthCheck
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(REGISTRY, "length", f"{module.__name__}:LengthCheck")

    run = simgen.generate(n=2, seed=1, model=str(tiny_model_dir), out=tmp_path / "run", max_turns=2, batch_size=2,
                          dtype="float32", progress=False, user=SamplingConfig(max_new_tokens=6),
                          assistant_sampling=SamplingConfig(max_new_tokens=6))
    report = LengthCheck().run(run)
    export_hub(run, tmp_path / "hub")
    assert json.loads((tmp_path / "hub" / "reports" / "length.json").read_text()) == report
    turns = pl.read_parquet(next((tmp_path / "hub" / "data" / "turns").glob("*.parquet")))
    dialogues = pl.read_parquet(next((tmp_path / "hub" / "data" / "dialogues").glob("*.parquet")))
    user = turns.filter(pl.col("role") == "user")
    assert user["length"].struct.field("chars").to_list() == user["text"].str.len_chars().to_list()
    assert turns.filter(pl.col("role") == "assistant")["length"].null_count() == turns.filter(pl.col("role") == "assistant").height
    assert set(dialogues["length"].struct.field("mean_chars").to_list()) == set(
        user.group_by("dialogue_id").agg(pl.col("text").str.len_chars().mean())["text"].to_list())
