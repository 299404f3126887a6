"""simgen.realism.compare on hand-made corpora: the report's contract, its verdicts, its warnings,
where it writes, and clear errors for unusable input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simgen.errors import ConfigError, DataError
from simgen.realism import RealismConfig, compare

FAST = RealismConfig(use_embeddings=False, discriminators=("tfidf", "style"), n_boot=200, n_perm=200, mauve_seeds=3)


@pytest.fixture(scope="module")
def distinct(make_corpus) -> dict:  # noqa: ANN001
    return compare(make_corpus("llm", 60, seed=1, intents=True), make_corpus("human", 60, seed=2), config=FAST)


def test_report_contract(distinct: dict) -> None:
    r = distinct
    assert set(r) >= {"auc", "auc_ci", "discriminators", "attributes", "mauve", "giveaways", "examples", "n", "warnings"}
    lo, hi = r["auc_ci"]
    assert lo <= r["auc"] <= hi
    assert set(r["discriminators"]) == {"tfidf", "style", "ensemble"}
    for d in r["discriminators"].values():
        for level in ("dialogue", "user_turn"):
            assert d[level]["ci"][0] <= d[level]["auc"] <= d[level]["ci"][1]
    alone = r["discriminators"]["ensemble"]["dialogue_from_user_turns"]
    assert alone["ci"][0] <= alone["auc"] <= alone["ci"][1]
    assert set(r["attributes"]) == {"intent", "sentiment", "topic", "length", "dialogue_length", "style"}
    for a in r["attributes"].values():
        for m in ("jsd", "tv"):
            assert 0 <= a[m]["ci"][0] <= a[m]["ci"][1] <= 1 and 0 < a[m]["p_value"] <= 1
        for lab in a["labellers"]:
            assert sum(lab["reference"]) == pytest.approx(1) and sum(lab["synthetic"]) == pytest.approx(1)
    assert r["n"]["synthetic"] == {"dialogues": 60, "turns": 480, "user_turns": 240}
    json.dumps(r)  # serialisable as is


def test_obvious_synthetic_is_caught_and_explained(distinct: dict) -> None:
    r = distinct
    assert r["auc"] > 0.95 and r["auc_ci"][0] > 0.9
    assert "distinguishable" in r["verdict"]
    # the user lines alone, each judged on its own and averaged per dialogue, already give it away
    assert r["discriminators"]["ensemble"]["dialogue_from_user_turns"]["auc"] > 0.95
    phrases = [p["phrase"] for p in r["giveaways"]["phrases"] if p["towards"] == "synthetic"]
    assert any(w in phrases for w in ("you", "i", "could", "recommend", "appreciate", "!", "."))
    top_features = {f["feature"] for f in r["giveaways"]["features"][:5]}
    assert top_features & {"chars", "words", "starts_upper", "all_lower", "word_len", "upper_frac", "ends_punct", "commas", "periods"}
    ex = r["examples"]["user_turns"]
    assert len(ex) == 5 and all(e["synthetic"] and e["nearest_reference"] for e in ex)
    assert ex[0]["score"] >= ex[-1]["score"]
    assert r["attributes"]["length"]["jsd"]["ci"][0] > 0.1  # long formal turns vs short casual ones
    assert r["attributes"]["length"]["jsd"]["p_value"] < 0.01
    assert r["mauve"]["mauve"] < 0.5 and r["mauve"]["seeds"] == 3


def test_intent_latents_are_a_label_source(distinct: dict) -> None:
    intent = distinct["attributes"]["intent"]
    sources = [lab["source"] for lab in intent["labellers"]]
    assert sources == ["synthetic labels (intent)"]
    assert intent["labellers"][0]["classes"] == ["accept", "ask", "reject"]
    assert 0 <= intent["labellers"][0]["cv_agreement"] <= 1


def test_same_source_is_indistinguishable(make_corpus) -> None:  # noqa: ANN001
    r = compare(make_corpus("human", 80, seed=3, prefix="a"), make_corpus("human", 80, seed=4, prefix="b"), config=FAST)
    assert r["auc_ci"][0] <= 0.5 <= r["auc_ci"][1], r["auc_ci"]
    assert abs(r["auc"] - 0.5) < 0.1
    assert "indistinguishable" in r["verdict"]
    alone = r["discriminators"]["ensemble"]["dialogue_from_user_turns"]
    assert alone["ci"][0] <= 0.5 <= alone["ci"][1], alone
    # no labels anywhere: the intent attribute falls back to clusters, and says so
    assert r["attributes"]["intent"]["labellers"][0]["source"].startswith("unlabelled")
    assert r["mauve"]["mauve"] > 0.8


def test_small_samples_warn_and_state_n(make_corpus) -> None:  # noqa: ANN001
    r = compare(make_corpus("llm", 12, seed=5), make_corpus("human", 12, seed=6), config=FAST)
    assert r["n"]["synthetic"]["dialogues"] == 12 and r["n"]["reference"]["dialogues"] == 12
    assert any("only 12 dialogues" in w for w in r["warnings"])
    assert any("fewer than 200" in w for w in r["warnings"])


def test_one_class_labels_are_skipped_with_a_warning(make_corpus) -> None:  # noqa: ANN001
    syn = make_corpus("llm", 20, seed=7, intents=True).with_columns(
        pl.when(pl.col("role") == "user").then(pl.lit("ask")).alias("intent")
    )
    r = compare(syn, make_corpus("human", 20, seed=8), config=FAST)
    assert any("one class cannot train" in w and "'ask'" in w for w in r["warnings"])


def test_out_dir_and_run_folder_defaults(tmp_path: Path, make_corpus) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    run.mkdir()
    syn = make_corpus("llm", 15, seed=9, intents=True).with_columns(
        pl.struct(pl.lit(41).alias("age")).alias("profile")
    )
    syn.write_parquet(run / "turns.parquet")
    (run / "manifest.json").write_text(json.dumps({"scenario": "movie-recommendation"}))
    before = (run / "turns.parquet").read_bytes()
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(x) for x in make_corpus("human", 15, seed=10).to_dicts()))
    r = compare(run, ref, config=FAST)
    assert (run / "reports" / "realism.json").is_file() and (run / "reports" / "realism.html").is_file()
    assert r["synthetic"]["scenario"] == "movie-recommendation"
    assert json.loads((run / "reports" / "realism.json").read_text())["auc"] == r["auc"]
    assert (run / "turns.parquet").read_bytes() == before  # checks never rewrite the turns
    compare(run, ref, tmp_path / "out", config=FAST)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]


def test_file_inputs_write_nothing_without_out(tmp_path: Path, make_corpus) -> None:  # noqa: ANN001
    syn = tmp_path / "syn.parquet"
    make_corpus("llm", 10, seed=11).write_parquet(syn)
    r = compare(syn, make_corpus("human", 10, seed=12), config=FAST)
    assert "paths" not in r and sorted(p.name for p in tmp_path.iterdir()) == ["syn.parquet"]


def test_seeded_runs_are_identical(make_corpus) -> None:  # noqa: ANN001
    a = compare(make_corpus("llm", 15, seed=13), make_corpus("human", 15, seed=14), config=FAST)
    b = compare(make_corpus("llm", 15, seed=13), make_corpus("human", 15, seed=14), config=FAST)
    for r in (a, b):
        r.pop("timing_s")
    assert a == b


def test_no_user_turns_is_a_clear_error(make_corpus) -> None:  # noqa: ANN001
    only_assistant = make_corpus("llm", 10, seed=15).with_columns(pl.lit("assistant").alias("role"))
    with pytest.raises(DataError, match=r"synthetic corpus .* has no user turns \(roles found: \['assistant'\]\)"):
        compare(only_assistant, make_corpus("human", 10, seed=16), config=FAST)


def test_too_few_dialogues_for_cv(make_corpus) -> None:  # noqa: ANN001
    with pytest.raises(DataError, match="needs at least 5"):
        compare(make_corpus("llm", 3, seed=17), make_corpus("human", 30, seed=18), config=FAST)


def test_missing_reference_and_unknown_name(make_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(DataError, match="does not exist"):
        compare(make_corpus("llm", 10, seed=0), tmp_path / "nope.jsonl", config=FAST)
    with pytest.raises(DataError, match="Did you mean 'chitchat'"):
        compare(make_corpus("llm", 10, seed=0), "chitchats", config=FAST)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown discriminator"):
        RealismConfig(discriminators=("tfidf", "bert"))
    with pytest.raises(ConfigError, match="needs use_embeddings"):
        RealismConfig(use_embeddings=False)


def test_embeddings_are_cached_per_corpus(make_corpus, simgen_cache: Path) -> None:  # noqa: ANN001
    from simgen.realism import embed

    texts = make_corpus("human", 5, seed=19)["text"].to_list()
    # the cache is shared by the session's realism tests: look only at what this call adds
    before = set((simgen_cache / "embeddings").rglob("*.npy"))
    first = embed.embed(texts)
    assert first.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-4)
    files = list(set((simgen_cache / "embeddings").rglob("*.npy")) - before)
    assert len(files) == 1 and files[0].stem == embed.corpus_key(texts)
    embed._model.cache_clear()
    again = embed.embed(list(reversed(texts)))  # same distinct texts: the cache answers, no model load
    assert embed._model.cache_info().misses == 0
    assert np.array_equal(again, first[::-1])


def test_the_embedding_modes_the_speed_benchmark_compares(make_corpus, monkeypatch) -> None:  # noqa: ANN001
    """`embed` runs and caches the precision "auto" resolves to on this CPU (bfloat16 with bf16
    arithmetic, else float32), under a tag that names it; bfloat16 stays within cosine 0.99 of
    float32; int8 dynamic quantisation gives unit vectors in the same space but further off
    (benchmarks/bench_embed.py)."""
    import simgen.models
    from simgen.realism import embed

    texts = make_corpus("human", 4, seed=23)["text"].to_list()[:24]
    base = embed.encode_texts(embed.load_model("float32"), texts, 8)
    here = "bfloat16" if simgen.models.native_bf16_cpu() else "float32"
    assert embed.PRECISION == "auto" and embed.precision() == here and embed.model_tag() == embed.MODEL_TAGS[here]
    # the same distinct texts in the same batches as `embed` (sorted, 64 a batch): bfloat16 results
    # depend on a batch's padding, so only the same batches give the same vectors to 1e-6
    uniq = sorted(set(texts))
    ran = embed.encode_texts(embed.load_model(here), uniq, 64)[[uniq.index(t) for t in texts]]
    assert np.allclose(ran, embed.embed(texts, use_cache=False), atol=1e-6)
    for flags, resolved in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(simgen.models, "native_bf16_cpu", lambda flags=flags: flags)
        assert embed.precision() == resolved
    monkeypatch.setattr(embed, "PRECISION", "float32")
    assert embed.precision() == "float32" and embed.model_tag().endswith("-fp32-len128")
    for precision, floor in (("bfloat16", 0.99), ("int8", 0.5)):
        vecs = embed.encode_texts(embed.load_model(precision), texts, 8)
        assert vecs.dtype == np.float32 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-2)
        assert np.sum(vecs * base, axis=1).min() > floor, precision
    with pytest.raises(ValueError, match="precision must be one of"):
        embed.load_model("fp8")


def test_full_pipeline_with_embeddings(make_corpus) -> None:  # noqa: ANN001
    cfg = RealismConfig(n_boot=200, n_perm=200, mauve_seeds=2)
    r = compare(make_corpus("llm", 20, seed=20, intents=True), make_corpus("human", 20, seed=21), config=cfg)
    assert r["discriminators"]["embedding"]["user_turn"]["auc"] > 0.9
    assert "embedding+lr" in r["attributes"]["intent"]["labellers"][0]["method"]
    assert r["examples"]["user_turns"][0]["similarity"] > 0
