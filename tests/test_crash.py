"""Crash safety on a real `simgen generate` subprocess: SIGKILL and SIGINT at chosen and random
moments, then `--resume`, must give the byte-identical turns.parquet of an uninterrupted run.

Kills land while the process starts (before the run folder or its manifest exists), while the
model loads, between and inside shard writes, and while the shards are merged into
turns.parquet. The moments are drawn from a seeded RNG, so a failure replays.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

N, BATCH = 6, 2  # three shards
CLI = [sys.executable, "-c", "import sys; from simgen.cli import main; sys.argv[0] = 'simgen'; main()"]
POLL = 0.005  # seconds between looks at the run folder
TIMEOUT = 600  # seconds one process may take on a loaded machine


def command(model: Path, out: Path, seed: int) -> list[str]:
    # short lines keep the tiny model fast; every stage of a real run still happens
    return [*CLI, "generate", "-n", str(N), "--seed", str(seed), "--model", str(model), "--out", str(out),
            "--batch-size", str(BATCH), "--max-turns", "2", "--user-max-new-tokens", "6",
            "--assistant-max-new-tokens", "6", "--dtype", "float32", "--quiet"]


def resume_command(out: Path) -> list[str]:
    return [*CLI, "generate", "--resume", str(out), "--quiet"]


def manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except FileNotFoundError:
        return None


@dataclass
class Trigger:
    """When to kill: `after` seconds once the folder reaches `state` (from the start if None)."""

    after: float = 0.0
    state: str | None = None  # "folder" | "shards:K" (K shards listed) | "merge" (every shard listed)
    reached: float | None = None  # when the state was first seen

    def due(self, out: Path, elapsed: float) -> bool:
        if self.reached is None and self.state_reached(out):
            self.reached = elapsed
        return self.reached is not None and elapsed >= self.reached + self.after

    def state_reached(self, out: Path) -> bool:
        if self.state is None:
            return True
        if self.state == "folder":
            return out.is_dir()
        m = manifest(out)
        if m is None:
            return False
        listed = len(m["progress"]["shards"])
        want = m["progress"]["n_shards"] if self.state == "merge" else int(self.state.split(":")[1])
        return listed >= want


def run_until(cmd: list[str], out: Path, trigger: Trigger | None, sig: int = signal.SIGKILL) -> subprocess.CompletedProcess:
    """Run `cmd`; send `sig` when `trigger` is due. The result's returncode says who won."""
    # stderr goes to a file: a pipe nobody reads while we poll could fill and stall the child
    with tempfile.TemporaryFile("w+") as err:
        # SIGINT as a terminal leaves it: a test runner started in the background inherits it ignored
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        start = time.perf_counter()
        while proc.poll() is None and trigger is not None:
            if trigger.due(out, time.perf_counter() - start):
                proc.send_signal(sig)
                break
            if time.perf_counter() - start > TIMEOUT:
                break
            time.sleep(POLL)
        try:
            proc.wait(timeout=max(TIMEOUT - (time.perf_counter() - start), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{' '.join(cmd[3:])} did not finish within {TIMEOUT} s")
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, "", err.read())


def check_consistent(out: Path) -> None:
    """What any kill may leave: every shard the manifest lists is on disk, whole, with its rows."""
    m = manifest(out)
    if m is None:
        return
    for s in m["progress"]["shards"]:
        path = out / "shards" / f"part-{s['shard']:05d}.parquet"
        if m["status"] != "complete":
            assert pl.read_parquet(path).height == s["rows"], path


def check_run(out: Path, baseline: bytes) -> None:
    turns = out / "turns.parquet"
    assert turns.read_bytes() == baseline
    t = pl.read_parquet(turns)
    assert t["dialogue_id"].n_unique() == N
    assert t.select("dialogue_id", "turn", "role").is_duplicated().sum() == 0
    for _, d in t.group_by("dialogue_id"):  # no truncated dialogue: turns 0..k, a stop reason on the last
        assert sorted(d["turn"].to_list()) == list(range(d.height))
        assert d["text"].null_count() == 0 and d.sort("turn")["stop_reason"][-1] is not None
    m = manifest(out)
    assert m["status"] == "complete" and m["counts"]["dialogues"] == N
    assert not (out / "shards").exists() and not list(out.glob(".*.tmp"))


@pytest.fixture(scope="module")
def baselines(tiny_model_dir, tmp_path_factory):
    """seed -> an uninterrupted subprocess run: (its turns.parquet bytes, wall time, folder)."""
    cache: dict[int, tuple[bytes, float, Path]] = {}

    def get(seed: int) -> tuple[bytes, float, Path]:
        if seed not in cache:
            out = tmp_path_factory.mktemp("baseline") / "run"
            start = time.perf_counter()
            done = run_until(command(tiny_model_dir, out, seed), out, None)
            assert done.returncode == 0, done.stderr
            cache[seed] = ((out / "turns.parquet").read_bytes(), time.perf_counter() - start, out)
        return cache[seed]

    return get


def kill_and_resume(model: Path, out: Path, seed: int, triggers: list[Trigger]) -> list[str]:
    """Kill one process per trigger, restarting each time as a user would; then finish the run.
    Returns what each kill left (the manifest's status, or 'no manifest')."""
    left = []
    for trigger in [*triggers, None]:
        m = manifest(out)
        cmd = resume_command(out) if m is not None else command(model, out, seed)
        done = run_until(cmd, out, trigger)
        if trigger is None:
            assert done.returncode == 0, done.stderr
            break
        assert done.returncode in (-signal.SIGKILL, 0), done.stderr  # 0: it finished before the kill landed
        check_consistent(out)
        m = manifest(out)
        left.append("no manifest" if m is None else m["status"])
    return left


def test_kills_at_chosen_moments_then_resume_is_byte_identical(tiny_model_dir, baselines, tmp_path):
    baseline, _, _ = baselines(0)
    out = tmp_path / "run"
    # as the folder appears; while the model loads (manifest, no shard); after a shard; in the merge
    triggers = [Trigger(state="folder"), Trigger(state="shards:0"), Trigger(state="shards:1"), Trigger(state="merge")]
    left = kill_and_resume(tiny_model_dir, out, 0, triggers)
    print(f"kills left {left}")
    assert left[0] in ("no manifest", "running") and left[1:3] == ["running", "running"]
    check_run(out, baseline)


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_kills_at_random_moments_then_resume_is_byte_identical(tiny_model_dir, baselines, tmp_path, seed):
    baseline, seconds, _ = baselines(seed)
    rng = random.Random(seed)
    # a random moment from process start to the end of a whole run (imports, model load, shards,
    # merge), a random moment after a random number of shards, then once more in the merge; a
    # kill that lands after the run finished is harmless
    triggers = [Trigger(after=rng.uniform(0.0, seconds)),
                Trigger(after=rng.uniform(0.0, 0.5), state=f"shards:{rng.randrange(N // BATCH)}"),
                Trigger(after=rng.uniform(0.0, 0.05), state="merge")]
    out = tmp_path / "run"
    left = kill_and_resume(tiny_model_dir, out, seed, triggers)
    print(f"seed {seed}: kills at {triggers} left {left}")
    check_run(out, baseline)


def test_kill_before_the_manifest_exists_says_to_rerun(tiny_model_dir, baselines, tmp_path):
    """A folder a run left before it wrote its manifest: --resume says what to do; the original
    command reuses the folder."""
    baseline, _, _ = baselines(0)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".write-test").write_bytes(b"")  # what a kill between the write probe and its removal leaves
    done = run_until(resume_command(out), out, None)
    assert done.returncode == 1
    assert "stopped before it wrote manifest.json" in done.stderr and f"--out {out}" in done.stderr
    kill_and_resume(tiny_model_dir, out, 0, [])
    check_run(out, baseline)


def test_ctrl_c_exits_130_says_how_to_resume_and_resume_matches(tiny_model_dir, baselines, tmp_path):
    baseline, _, _ = baselines(0)
    out = tmp_path / "run"
    done = run_until(command(tiny_model_dir, out, 0), out, Trigger(state="shards:1"), sig=signal.SIGINT)
    assert done.returncode == 130, done.stderr
    assert f"Resume with: simgen generate --resume {out}\n" in done.stderr
    m = manifest(out)
    assert m["status"] == "interrupted" and 1 <= len(m["progress"]["shards"]) < m["progress"]["n_shards"]
    check_consistent(out)
    assert run_until(resume_command(out), out, None).returncode == 0
    check_run(out, baseline)


def test_complete_run_with_leftover_shards_is_cleaned_on_resume(tiny_model_dir, baselines, tmp_path):
    """A kill while a finished run removed its shards: resume removes the rest."""
    baseline, _, finished = baselines(0)
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "shards").mkdir()
    (out / "shards" / "part-00001.parquet").write_bytes(b"half a shard")
    (out / ".turns.parquet.tmp").write_bytes(b"half a merge")
    done = run_until(resume_command(out), out, None)
    assert done.returncode == 0, done.stderr
    check_run(out, baseline)


@pytest.fixture
def sigint_handler():
    """Set SIGINT's handler for one test (the runner may have inherited it ignored) and put it back after."""
    before = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, before)


def test_interrupt_is_held_until_the_block_ends(sigint_handler):
    """Ctrl-C inside `deferred_interrupt` (where a shard and its manifest entry are written) is
    raised only once the block is done."""
    from simgen.generation.run import deferred_interrupt

    sigint_handler(signal.default_int_handler)  # as Python sets it up under a terminal
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_interrupt_stays_ignored(sigint_handler):
    """A process started with SIGINT ignored (`nohup`, `&` from a script) is not stopped by one inside the block."""
    from simgen.generation.run import deferred_interrupt

    sigint_handler(signal.SIG_IGN)
    finished = []
    with deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
