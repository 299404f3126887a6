"""`simgen generate --ray` on a real local Ray cluster (two single-CPU workers) and the tiny random Llama:
the run is byte-identical to the one-machine run; a worker SIGKILLed mid-stream costs only its stream (the
unit a worker runs: --refill shards through one batch); a killed driver resumes, on one machine; bad input
fails before anything is written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simgen.config import SamplingConfig
from simgen.errors import RunError
from simgen.generation import resume
from simgen.cluster import RayConfig, check_workers, simgen_version

pytestmark = pytest.mark.slow  # a real Ray cluster: about 5 minutes for tests/cluster (CI runs them)

GEN = dict(scenario="movie-recommendation", n=8, seed=11, max_turns=3, batch_size=2, refill=2, dtype="float32",
           user=SamplingConfig(max_new_tokens=8, trim=False), assistant_sampling=SamplingConfig(max_new_tokens=10, trim=False))


@pytest.fixture(scope="module")
def local_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import simgen

    return simgen.generate(model=str(tiny_model_dir), out=tmp_path_factory.mktemp("ray-local") / "run", progress=False, **GEN).path


def turns_bytes(run: Path) -> bytes:
    return (run / "turns.parquet").read_bytes()


def test_a_ray_run_is_byte_identical_to_the_local_run(ray_address, local_run, tiny_model_dir, tmp_path):
    import simgen

    run = simgen.generate(model=str(tiny_model_dir), out=tmp_path / "run", progress=False,
                          ray=RayConfig(address=ray_address, workers=2), **GEN)
    assert turns_bytes(run.path) == turns_bytes(local_run)
    m = run.manifest
    assert m["status"] == "complete" and m["cluster"]["workers"] == 2 and m["counts"]["dialogues"] == GEN["n"]
    assert not (run.path / "shards").exists() and not list(run.path.glob(".ray-probe-*"))


def test_a_worker_killed_mid_stream_costs_only_that_stream(ray_address, local_run, tiny_model_dir, tmp_path, monkeypatch):
    import simgen

    marker = tmp_path / "killed-once"
    monkeypatch.setenv("SIMGEN_RAY_FAULT", f"kill:1:{marker}")  # the worker on stream 1 half-writes its first shard, then SIGKILLs itself
    run = simgen.generate(model=str(tiny_model_dir), out=tmp_path / "run", progress=False,
                          ray=RayConfig(address=ray_address, workers=2, retries=1), **GEN)
    assert marker.read_text().startswith("killed pid") and "on unit 1" in marker.read_text()
    assert turns_bytes(run.path) == turns_bytes(local_run)


def test_a_stream_that_fails_for_good_is_reported_and_the_rest_resume_on_one_machine(ray_address, local_run, tiny_model_dir,
                                                                                    tmp_path, monkeypatch):
    """With --refill unset, a Ray run settles it at 1, so each stream is one shard (the unit numbers
    are shard numbers) and the workers share the run shard by shard; the rest, resumed on one
    machine, matches the local run made with --refill 2 (the tiny model in fp32 draws the same
    tokens in any batch company)."""
    import simgen

    marker = tmp_path / "killed-once"
    monkeypatch.setenv("SIMGEN_RAY_FAULT", f"kill:2:{marker}")
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"1 stream\(s\) failed on the cluster after 0 retries each \(\[2\]; stream 2: .*\); "
                                        r"1 stream\(s\) not started, no worker being left \(\[3\]\).*--resume"):
        simgen.generate(model=str(tiny_model_dir), out=out, progress=False,
                        ray=RayConfig(address=ray_address, workers=1, retries=0), **{k: v for k, v in GEN.items() if k != "refill"})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["refill"] == 1
    done = sorted(s["shard"] for s in manifest["progress"]["shards"])
    assert manifest["status"] == "interrupted" and 2 not in done and done  # shards before the failure are kept
    from simgen.generation.run import shard_name

    assert (out / "shards" / f".{shard_name(2)}.tmp").is_file()  # the half-written file is there, and never counts
    run = resume(out, progress=False)  # on one machine
    assert turns_bytes(run.path) == turns_bytes(local_run)


def test_a_killed_driver_resumes_on_the_cluster(ray_address, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    exe = str(Path(sys.executable).with_name("simgen"))
    argv = [exe, "generate", "--model", str(tiny_model_dir), "-n", "8", "--seed", "11", "--max-turns", "3",
            "--batch-size", "2", "--refill", "2", "--dtype", "float32", "--user-max-new-tokens", "8", "--assistant-max-new-tokens", "10",
            "--no-trim", "-q"]
    reference = tmp_path / "one-machine"
    subprocess.run([*argv, "--out", str(reference)], check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen([*argv, "--out", str(out), "--ray", ray_address, "--ray-workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while True:  # kill the driver once a shard is listed and before the last one is
        m = out / "manifest.json"
        shards = json.loads(m.read_text())["progress"]["shards"] if m.exists() else []
        if shards:
            break
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and 0 < len(manifest["progress"]["shards"]) < 4
    res = subprocess.run([exe, "generate", "--resume", str(out), "-q", "--ray", ray_address], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert turns_bytes(out) == turns_bytes(reference)


def test_an_unreachable_cluster_fails_before_the_folder_is_made(tiny_model_dir, tmp_path):
    import simgen

    from tests.conftest import free_port

    with pytest.raises(RunError, match=r"--ray 127.0.0.1:\d+: cannot reach a Ray cluster there.*ray start --head"):
        simgen.generate(model=str(tiny_model_dir), out=tmp_path / "run", progress=False,
                        ray=RayConfig(address=f"127.0.0.1:{free_port()}"), **GEN)
    assert not (tmp_path / "run").exists()


def test_workers_with_another_simgen_or_without_the_folder_are_refused(tmp_path):
    ok = {"host": "node-a", "pid": 1, "simgen": simgen_version(), "sees_folder": True}
    check_workers([ok], tmp_path)
    with pytest.raises(RunError, match=r"node-b \(pid 2\) runs simgen 0\.0\.1, this driver simgen .*same simgen on every node"):
        check_workers([ok, {**ok, "host": "node-b", "pid": 2, "simgen": "0.0.1"}], tmp_path)
    with pytest.raises(RunError, match=r"node-c .*cannot see the run folder .*filesystem every node mounts"):
        check_workers([{**ok, "host": "node-c", "sees_folder": False}], tmp_path)


def test_ray_settings_are_checked(tmp_path):
    from simgen.errors import ConfigError

    with pytest.raises(ConfigError, match="--ray-workers 0"):
        RayConfig(workers=0)
    with pytest.raises(ConfigError, match="--assistant with --ray"):
        import simgen

        simgen.generate(n=2, out=tmp_path / "x", assistant=lambda m: "hi", ray=RayConfig(address="127.0.0.1:1"))
    assert not (tmp_path / "x").exists()


def test_ray_missing_is_a_clear_error_before_anything_is_written(tiny_model_dir, tmp_path, monkeypatch):
    """Where Ray is not installed (simulated by hiding the module): say what to install, write nothing."""
    import simgen

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RunError, match=r"--ray needs Ray, which is not installed: pip install 'simgen\[ray\]'"):
        simgen.generate(model=str(tiny_model_dir), out=tmp_path / "run", progress=False, ray=RayConfig(), **GEN)
    assert not (tmp_path / "run").exists()


def test_a_model_that_fails_to_load_on_the_workers_is_a_clear_error(ray_address, tiny_model_dir, tmp_path):
    """The driver finds the model's files (its check loads nothing); the workers cannot load the broken weights."""
    import shutil

    import simgen
    from simgen.errors import SimgenError

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    with pytest.raises(SimgenError, match=r"(on a Ray worker: |a Ray worker failed while loading its model: )"):
        simgen.generate(model=str(broken), out=tmp_path / "run", progress=False,
                        ray=RayConfig(address=ray_address, workers=1), **GEN)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["progress"]["shards"] == []  # nothing counts as done


def test_the_openai_backend_on_ray_calls_the_servers_from_the_workers(ray_address, llamacpp, tmp_path):
    """llama.cpp's server (in this process) listed twice as replicas; the workers send the requests."""
    import simgen
    from simgen.config import GenerateConfig, ServerConfig

    greedy = SamplingConfig(temperature=0, max_new_tokens=12)
    cfg = GenerateConfig(n=4, max_turns=2, batch_size=2, refill=1, backend="openai", server=ServerConfig(base_url=f"{llamacpp},{llamacpp}"),
                         model="smollm2", user=greedy, assistant=greedy)
    run = simgen.generate(config=cfg, out=tmp_path / "run", progress=False, ray=RayConfig(address=ray_address, workers=2))
    m = run.manifest
    assert m["status"] == "complete" and m["counts"]["dialogues"] == 4 and m["counts"]["failed"] == 0
    assert m["backend"]["user"]["backend"] == "openai" and m["backend"]["user"]["base_url"] == f"{llamacpp},{llamacpp}"
    assert m["cluster"]["workers"] == 2 and (run.turns["n_tokens"] > 0).all()
