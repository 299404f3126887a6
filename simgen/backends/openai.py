"""An OpenAI-compatible chat-completions server as a backend: vLLM, llama.cpp's server, TGI, Ollama.

    simgen generate --backend openai --base-url http://127.0.0.1:8080/v1 --model NAME

One `generate` call sends one request per chat through a bounded thread pool (`concurrency`
requests in flight at most), so the server can batch them. Each request is retried on what is
worth retrying: HTTP 408/409/429/5xx, a dropped connection, a timeout, a body that is not the JSON
of a chat completion. Retries wait `backoff * 2**attempt` seconds (capped, with jitter; a
`Retry-After` header wins) and stop after `max_retries`. A chat that still fails becomes a
`Generation` with `error` set: the simulator records it as that dialogue's stop reason and the run
goes on. A 401/403 means every request will fail, so it stops the run with a `BackendError` (the
finished shards stay; fix the key and `--resume`).

The API key is read from the environment variable named by `api_key_env` (default
`OPENAI_API_KEY`), sent only in the Authorization header, and never written to the manifest, a log
or an error message. A local server needs none.

The server keeps no state for simgen: every request carries the whole chat (llama.cpp and vLLM
reuse the shared prefix in their own caches). `seed` is sent per request; servers that honour it
(llama.cpp, vLLM) make sampled runs repeatable, which is why the backend claims `seeded` only for
greedy decoding.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from simgen.backends import Backend
from simgen.config import GenerateConfig, SamplingConfig
from simgen.data import Chat, Generation
from simgen.errors import BackendError, ConfigError

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403})
MAX_WAIT = 30.0  # seconds: the longest single wait between retries, Retry-After included


class Retryable(Exception):
    """A failure worth another try; the message says what happened."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Failed(Exception):
    """A failure that another try would repeat (e.g. a 400 for this chat), or retries that ran out.

    `status` is the HTTP status the server answered with, when it answered.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ChatClient:
    """POSTs chat completions with keep-alive connections (one per thread) and bounded retries."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 0.5) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--base-url {base_url!r}: expected an http(s) URL such as http://127.0.0.1:8080/v1.")
        self.base_url = base_url.rstrip("/")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self._local = threading.local()

    # --------------------------------------------------------------- one HTTP exchange

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        """One exchange; raises Retryable, Failed or BackendError (fatal). Returns the parsed JSON."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        try:
            conn = self._connection()
            conn.request(method, self.path + endpoint, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (TimeoutError, socket.timeout) as e:
            self._drop_connection()
            raise Retryable(f"no answer within {self.timeout:g} s ({e or 'timeout'})") from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            self._drop_connection()
            raise Retryable(f"connection failed ({type(e).__name__}: {e})") from None
        if response.getheader("Connection", "").lower() == "close":
            self._drop_connection()
        status = response.status
        if status in FATAL_STATUS:
            raise BackendError(f"{self.base_url}: the server answered {status} {response.reason}: the API key was refused. "
                               "Set the key in the environment variable named by --api-key-env (default OPENAI_API_KEY).")
        if status in RETRY_STATUS:
            raise Retryable(f"HTTP {status} {response.reason}: {_excerpt(payload)}", _retry_after(response.getheader("Retry-After")))
        if status >= 400:
            raise Failed(f"HTTP {status} {response.reason}: {_excerpt(payload)}", status)
        try:
            return json.loads(payload)
        except ValueError:
            raise Retryable(f"the answer is not JSON: {_excerpt(payload)}") from None

    def with_retries(self, method: str, endpoint: str, body: dict[str, Any] | None, parse: Any) -> Any:
        """`parse(request(...))`, retried; a malformed answer (parse raises Retryable) is retried too."""
        for attempt in range(self.max_retries + 1):
            try:
                return parse(self.request(method, endpoint, body))
            except Retryable as e:
                if attempt == self.max_retries:
                    raise Failed(f"{e} (gave up after {attempt + 1} tries)") from None
                wait = e.retry_after if e.retry_after is not None else self.backoff * 2**attempt * random.uniform(0.5, 1.0)
                time.sleep(min(wait, MAX_WAIT))
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Fail at once, with a clear error, when the server cannot be reached."""
        try:
            self.request("GET", "/models")
        except (Retryable, Failed) as e:
            raise BackendError(f"cannot reach an OpenAI-compatible server at {self.base_url} ({e}). "
                               "Start it, or fix --base-url (it ends in /v1, e.g. http://127.0.0.1:8080/v1).") from None


def _excerpt(payload: bytes) -> str:
    text = payload[:200].decode("utf-8", "replace").strip()
    return text or "(empty body)"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date; fall back to our own backoff


def parse_completion(payload: Any) -> Generation:
    """A chat-completion JSON -> Generation; anything else is Retryable (a garbled answer)."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"] or ""
        if not isinstance(text, str):
            raise TypeError("content is not a string")
    except (KeyError, IndexError, TypeError) as e:
        raise Retryable(f"the answer is not a chat completion ({type(e).__name__}: {e})") from None
    usage = payload.get("usage") or {}
    tokens = usage.get("completion_tokens")
    finish = choice.get("finish_reason") or "stop"
    return Generation(text, n_tokens=int(tokens) if isinstance(tokens, int) else 0, finish_reason="length" if finish == "length" else "stop")


class OpenAIBackend(Backend):
    """Chats sent as concurrent requests to an OpenAI-compatible `/v1/chat/completions`."""

    name = "openai"
    batched = True  # the server batches concurrent requests
    seeded = False  # only as reproducible as the server's own seeding

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 16,
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 0.5, check: bool = True) -> None:
        if not model:
            raise ConfigError("--backend openai needs --model NAME: the model name the server serves.")
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be a positive integer, got {concurrency}.")
        self.model, self.api_key_env, self.concurrency = model, api_key_env, concurrency
        urls = [u.strip() for u in base_url.split(",") if u.strip()]
        if not urls:
            raise ConfigError(f"--base-url {base_url!r}: expected an http(s) URL such as http://127.0.0.1:8080/v1.")
        # several URLs: replicas of one model; a request goes to the one its seed picks (`_one`), so the
        # spread does not depend on timing, and every process of a Ray run spreads its requests the same way
        self.clients = [ChatClient(u, os.environ.get(api_key_env), timeout, max_retries, backoff) for u in urls]
        self.client = self.clients[0]
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="simgen-openai")
        if check:
            for client in self.clients:
                client.check()

    @classmethod
    def from_config(cls, config: GenerateConfig, model: str | None) -> OpenAIBackend:
        server = config.server
        if not server.base_url or not model:
            raise ConfigError("--backend openai needs --base-url URL (ending in /v1) and --model NAME (the name the server serves).")
        return cls(server.base_url, model, server.api_key_env, server.concurrency, server.request_timeout, server.max_retries)

    @classmethod
    def precheck(cls, config: GenerateConfig, model: str | None) -> OpenAIBackend:
        return cls.from_config(config, model)  # asks the server; the backend is kept for the run

    def body(self, chat: Chat, sampling: SamplingConfig, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in chat], "max_tokens": sampling.max_new_tokens,
                                "temperature": sampling.heat, "top_p": sampling.top_p, "seed": seed % 2**31, "stream": False}
        if sampling.min_p:  # not in OpenAI's API: vLLM, llama.cpp and TGI's OpenAI route read `min_p`
            body["min_p"] = sampling.min_p
        if sampling.penalty != 1:
            # not in OpenAI's API: vLLM and TGI read `repetition_penalty`, llama.cpp `repeat_penalty`
            body["repetition_penalty"] = body["repeat_penalty"] = sampling.penalty
        return body

    def _one(self, chat: Chat, sampling: SamplingConfig, seed: int) -> Generation:
        client = self.clients[seed % len(self.clients)]
        try:
            return client.with_retries("POST", "/chat/completions", self.body(chat, sampling, seed), parse_completion)
        except Failed as e:
            return Generation("", finish_reason="error", error=f"{client.base_url}: {e}")

    def generate(self, chats: Sequence[Chat], sampling: SamplingConfig, seeds: Sequence[int]) -> list[Generation]:
        return list(self._pool.map(self._one, chats, [sampling] * len(chats), seeds))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "base_url": ",".join(c.base_url for c in self.clients), "model": self.model,
                "api_key_env": self.api_key_env,
                "concurrency": self.concurrency, "timeout": self.client.timeout, "max_retries": self.client.max_retries}

    def close(self) -> None:
        """Stop the request threads (requests in flight are cancelled)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
