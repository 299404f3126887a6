"""The OpenAI-compatible backend against real servers on 127.0.0.1.

Two kinds of server, both real sockets and real HTTP, no mocks:
- llama.cpp's server (the xllamacpp wheel, in-process) on the embedded GGUF: the happy path, the
  API key, the CLI;
- `FaultServer`, a small http.server that misbehaves on purpose by script (drops the connection,
  answers 500 or 429, sends broken JSON, stalls past the timeout), then answers a valid chat
  completion: retries, their bound, and a dialogue that still fails being recorded while the run
  goes on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest
from click.testing import CliRunner

from simgen.backends.openai import OpenAIBackend
from simgen.cli import cli
from simgen.config import GenerateConfig, SamplingConfig, ServerConfig
from simgen.errors import BackendError, ConfigError
from simgen.generation.pipeline import generate
from tests.conftest import free_port

SECRET = "sk-test-0123456789-do-not-print"
GREEDY = SamplingConfig(temperature=0, max_new_tokens=12)


# --------------------------------------------------------------------------- llama.cpp server


def test_generate_through_llamacpp_server_records_the_run_and_never_the_key(llamacpp, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "generate", "--backend", "openai", "--base-url", llamacpp, "--model", "smollm2", "-n", "3", "--max-turns", "2",
        "-t", "0", "--user-max-new-tokens", "12", "--assistant-max-new-tokens", "12", "--concurrency", "4", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    turns = pl.read_parquet(out / "turns.parquet")
    assert turns["dialogue_id"].n_unique() == 3
    assert (turns["n_tokens"] > 0).all() and (turns["n_tokens"] <= 12).all()
    assert turns["text"].str.len_chars().min() > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"]["user"] | {} == manifest["backend"]["assistant"]
    assert manifest["backend"]["user"]["backend"] == "openai" and manifest["backend"]["user"]["api_key_env"] == "OPENAI_API_KEY"
    assert manifest["counts"]["failed"] == 0
    for text in (result.output, (out / "manifest.json").read_text()):
        assert SECRET not in text


def test_greedy_runs_through_the_server_are_repeatable(llamacpp, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = GenerateConfig(n=2, max_turns=2, batch_size=2, backend="openai", server=ServerConfig(base_url=llamacpp), model="smollm2",
                             user=GREEDY, assistant=GREEDY)
        runs.append(generate(config=cfg, out=tmp_path / name, progress=False).turns.select("text", "n_tokens"))
    assert runs[0].equals(runs[1])


def test_a_refused_api_key_fails_before_the_run_folder_and_is_never_printed(tmp_path, monkeypatch):
    pytest.importorskip("xllamacpp")
    from simgen.backends.llamacpp import serve_gguf

    out = tmp_path / "run"
    args = ["generate", "--backend", "openai", "--model", "smollm2", "-n", "2", "--max-turns", "1", "-t", "0",
            "--user-max-new-tokens", "8", "--assistant-max-new-tokens", "8", "--api-key-env", "MY_KEY", "-q", "--out", str(out)]
    with serve_gguf(parallel=2, ctx_per_slot=1024, threads=1, api_keys=[SECRET]) as url:
        monkeypatch.setenv("MY_KEY", "sk-wrong-key")
        result = CliRunner().invoke(cli, [*args, "--base-url", url])
        assert result.exit_code == 1
        assert "API key was refused" in result.output and "--api-key-env" in result.output
        assert "sk-wrong-key" not in result.output and not out.exists()

        monkeypatch.setenv("MY_KEY", SECRET)
        result = CliRunner().invoke(cli, [*args, "--base-url", url])
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output and SECRET not in (out / "manifest.json").read_text()
    assert pl.read_parquet(out / "turns.parquet")["dialogue_id"].n_unique() == 2


def test_an_unreachable_server_fails_before_the_run_folder_exists(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["generate", "--backend", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                                      "--model", "m", "-n", "2", "-q", "--out", str(out)])
    assert result.exit_code == 1
    assert "cannot reach an OpenAI-compatible server" in result.output and "--base-url" in result.output
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--backend", "openai", "--model", "m"], "--base-url"),
    (["--backend", "openai", "--base-url", "ftp://x/v1", "--model", "m"], "http(s) URL"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:1/v1", "--model", "m", "--concurrency", "0"], "concurrency"),
])
def test_bad_backend_flags_are_named(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["generate", *args, "-n", "1", "-q", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and message in result.output


# --------------------------------------------------------------------------- a server that misbehaves


class FaultServer:
    """A chat-completions server that plays `script[k]` for its k-th request, then answers `ok`.

    drop: closes the socket without answering · 500 / 503 / 429: that status (429 with Retry-After: 0)
    401: the key is refused · garbage: 200 with a body that is not JSON · wrongshape: 200 with JSON that is no completion
    stall: sleeps `stall_s`, past the client's timeout · 400: a request the server rejects for good
    ok: a valid completion whose text names the request's last message
    """

    def __init__(self, script: list[str] | None = None, always: str | None = None, delay: float = 0.0, stall_s: float = 1.5) -> None:
        self.script, self.always, self.delay, self.stall_s = list(script or []), always, delay, stall_s
        self.lock = threading.Lock()
        self.requests = 0
        self.inflight = self.max_inflight = 0
        self.auth: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fault"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    k = server.requests
                    server.requests += 1
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                    server.auth.append(self.headers.get("Authorization"))
                try:
                    time.sleep(server.delay)
                    self._play(server.always or (server.script[k] if k < len(server.script) else "ok"), body)
                finally:
                    with server.lock:
                        server.inflight -= 1

            def _play(self, action: str, body: dict) -> None:
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif action in ("500", "503", "400", "401"):
                    self._send(int(action), b'{"error": "planted"}')
                elif action == "429":
                    self._send(429, b'{"error": "slow down"}', {"Retry-After": "0"})
                elif action == "garbage":
                    self._send(200, b'{"choices": [{"message": ')
                elif action == "wrongshape":
                    self._send(200, b'{"data": 1}')
                elif action == "stall":
                    time.sleep(server.stall_s)
                    self._send(200, b"{}")
                else:
                    last = body["messages"][-1]["content"]
                    text = f"answer {len(body['messages'])} to {last[:30]}"
                    self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                                "usage": {"completion_tokens": 7}}).encode())

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault_server():
    servers: list[FaultServer] = []

    def start(**kwargs) -> FaultServer:
        servers.append(FaultServer(**kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _backend(server: FaultServer, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(server.url, "fault", **{"timeout": 0.5, "max_retries": 3, "backoff": 0.01, **kwargs})


CHAT = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize("fault", ["drop", "500", "503", "429", "garbage", "wrongshape", "stall"])
def test_each_fault_is_retried_then_answered(fault_server, fault):
    server = fault_server(script=[fault, fault])
    [g] = _backend(server).generate([CHAT], GREEDY, [0])
    assert g.error is None and g.text == "answer 1 to hello there" and g.n_tokens == 7
    assert server.requests == 3


@pytest.mark.parametrize("fault", ["drop", "500", "garbage", "stall"])
def test_retries_are_bounded_and_the_failure_says_what_happened(fault_server, fault):
    server = fault_server(always=fault)
    [g] = _backend(server, max_retries=2).generate([CHAT], GREEDY, [0])
    assert server.requests == 3
    assert g.text == "" and "gave up after 3 tries" in g.error and server.url in g.error


def test_a_rejected_request_is_not_retried(fault_server):
    server = fault_server(always="400")
    [g] = _backend(server).generate([CHAT], GREEDY, [0])
    assert server.requests == 1 and "HTTP 400" in g.error and "planted" in g.error


def test_concurrency_is_bounded_by_the_pool(fault_server):
    server = fault_server(delay=0.1)
    chats = [[{"role": "user", "content": f"chat {i}"}] for i in range(10)]
    out = _backend(server, concurrency=3).generate(chats, GREEDY, list(range(10)))
    assert [g.text for g in out] == [f"answer 1 to chat {i}" for i in range(10)]  # in order
    assert server.max_inflight == 3


def test_several_base_urls_spread_the_requests_by_seed(fault_server):
    """Replicas of one model: request i goes to the URL its seed picks, answers come back in order."""
    a, b = fault_server(), fault_server()
    chats = [[{"role": "user", "content": f"chat {i}"}] for i in range(10)]
    backend = OpenAIBackend(f"{a.url}, {b.url}", "fault", timeout=0.5, max_retries=1, backoff=0.01)
    out = backend.generate(chats, GREEDY, list(range(10)))
    assert [g.text for g in out] == [f"answer 1 to chat {i}" for i in range(10)]
    assert a.requests == b.requests == 5  # even seeds to the first, odd to the second
    assert backend.describe()["base_url"] == f"{a.url},{b.url}"


def test_a_dead_replica_is_named_when_checked_and_when_it_fails(fault_server):
    a = fault_server()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match=f"cannot reach an OpenAI-compatible server at {dead}"):
        OpenAIBackend(f"{a.url},{dead}", "fault", timeout=0.5, max_retries=0, backoff=0.01)
    b = fault_server(always="500")
    out = OpenAIBackend(f"{a.url},{b.url}", "fault", timeout=0.5, max_retries=0, backoff=0.01, check=False).generate(
        [CHAT, CHAT], GREEDY, [0, 1])
    assert out[0].error is None and b.url in out[1].error


def test_the_key_is_sent_only_as_a_bearer_header(fault_server, monkeypatch):
    monkeypatch.setenv("SIMGEN_TEST_KEY", SECRET)
    server = fault_server()
    backend = _backend(server, api_key_env="SIMGEN_TEST_KEY")
    backend.generate([CHAT], GREEDY, [0])
    assert server.auth == [f"Bearer {SECRET}"]
    assert SECRET not in json.dumps(backend.describe())


def test_a_run_goes_on_when_the_assistant_server_keeps_failing(fault_server, tiny_model_dir, tmp_path):
    """The user side is the tiny model in-process; the assistant is a server that fails every
    request. Each dialogue stops at its first assistant turn with the error recorded, the run
    completes, and the manifest counts the failures."""
    server = fault_server(always="503")
    run = generate(n=3, seed=0, model=str(tiny_model_dir), max_turns=2, batch_size=3, out=tmp_path / "r",
                   assistant=_backend(server, max_retries=1), progress=False,
                   user=SamplingConfig(temperature=0.8, max_new_tokens=8, trim=False))
    dialogues = run.dialogues()
    assert dialogues.height == 3
    assert all(r.startswith("generation_error:") and "HTTP 503" in r for r in dialogues["stop_reason"])
    assert run.manifest["counts"]["failed"] == 3
    assert server.requests == 3 * 2


def test_a_flaky_server_still_yields_every_dialogue(fault_server, tiny_model_dir, tmp_path):
    """One request in two fails (in turn: dropped, 500, broken JSON, 429); retries absorb all of it."""
    script = [f for _ in range(20) for f in ("drop", "ok", "500", "ok", "garbage", "ok", "429", "ok")]
    server = fault_server(script=script)
    run = generate(n=4, seed=0, model=str(tiny_model_dir), max_turns=3, batch_size=4, out=tmp_path / "r",
                   assistant=_backend(server, concurrency=1), progress=False,
                   user=SamplingConfig(temperature=0.8, max_new_tokens=8, trim=False))
    assert run.manifest["counts"]["failed"] == 0
    assistant = run.turns.filter(pl.col("role") == "assistant")
    assert assistant.height > 0 and assistant["text"].str.starts_with("answer ").all()


def test_a_key_refused_mid_run_stops_the_run_and_resume_finishes_it(fault_server, tiny_model_dir, tmp_path):
    """A 401 will repeat for every request, so it stops the run at once (finished shards stay) and
    `resume` with a working server completes it, identical to a run that never failed."""
    user = SamplingConfig(temperature=0.8, max_new_tokens=8, trim=False)
    # --refill 1: shard by shard, so the first shard is whole before the 401 (a stream would interleave the two)
    common = dict(n=4, seed=0, model=str(tiny_model_dir), max_turns=2, batch_size=2, refill=1, progress=False, user=user)
    reference = generate(**common, out=tmp_path / "ref", assistant=_backend(fault_server()))
    # the first shard's assistant requests: each stored line, and each draw of it the redraws rejected
    first_shard = (reference.turns.filter(pl.col("dialogue_id").is_in(["d0000000", "d0000001"]) & (pl.col("role") == "assistant"))
                   .select((pl.col("redraws").fill_null(0) + 1).sum()).item())
    refused = fault_server(script=["ok"] * first_shard + ["401"])  # the first shard's assistant lines go through, then 401
    with pytest.raises(BackendError, match="API key was refused"):
        generate(**common, out=tmp_path / "r", assistant=_backend(refused))
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] != "complete" and len(manifest["progress"]["shards"]) == 1
    from simgen.generation.pipeline import resume

    run = resume(tmp_path / "r", assistant=_backend(fault_server()), progress=False)
    assert (run.path / "turns.parquet").read_bytes() == (reference.path / "turns.parquet").read_bytes()


def test_config_errors_name_what_to_fix():
    with pytest.raises(ConfigError, match="--model NAME"):
        OpenAIBackend("http://127.0.0.1:1/v1", "", check=False)
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=1)
