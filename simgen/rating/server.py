"""The rating page: a small Starlette app served by uvicorn.

Why Starlette + uvicorn: several raters answer at once, and an ASGI server takes concurrent
requests on one event loop with no extra threads to reason about; both are small, widely used and
pure Python wheels, and the page needs nothing else (no build step, no CDN: the page's CSS and
script are files of this package, served from /static).

    GET  /                    who is rating: the named raters (--raters) or a name box
    GET  /rate/{rater}        the rater's next dialogue (or their results once all are done)
    POST /rate/{rater}        an answer: position, choice, confidence, note, ms; then 303 to the next
    GET  /results/{rater}     the rater's own and everyone's results, simgen's discriminators beside them
    GET  /status.json         answers per rater, whether the machine scores are ready

Every page of an item is rendered from the same template; only the dialogue, the progress count
and the position differ between items (tests/rating checks this).
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2

from simgen.errors import RunError
from simgen.rating.answers import CHOICES, CONFIDENCE, Answers
from simgen.rating.items import ItemSet

WEB = Path(__file__).parent / "web"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
NAME_HELP = "letters, digits, '.', '_' or '-', at most 40, starting with a letter or digit"


class Machine:
    """simgen's discriminators on the items, computed once in a background thread (None until done)."""

    def __init__(self, compute: Any | None) -> None:
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self._thread = None
        if compute is not None:
            self._thread = threading.Thread(target=self._run, args=(compute,), daemon=True, name="simgen-rate-machine")
            self._thread.start()

    def _run(self, compute: Any) -> None:
        try:
            self.result = compute()
        except Exception as e:  # shown on the results view; the rating goes on
            self.error = f"{type(e).__name__}: {e}"

    @property
    def state(self) -> str:
        return "ready" if self.result else "failed" if self.error else "off" if self._thread is None else "computing"


def make_app(items: ItemSet, answers: Answers, *, raters: tuple[str, ...] = (), machine: Machine | None = None,
             n_boot: int = 1000) -> Any:
    """The ASGI app of a rating."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(WEB), autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    machine = machine or Machine(None)
    total = len(items.items)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def rater_or_error(request: Request) -> str | Response:
        rater = request.path_params["rater"]
        if not NAME.match(rater):
            return page("message.html", 400, title="Not a rater name", text=f"A rater name is {NAME_HELP}.")
        if raters and rater not in raters:
            return page("message.html", 404, title="Unknown rater",
                        text=f"{rater!r} is not one of this rating's raters ({', '.join(raters)}).")
        return rater

    async def start(request: Request) -> Response:
        name = request.query_params.get("name", "").strip()
        if name:
            return RedirectResponse(f"/rate/{quote(name)}", status_code=303)
        done = answers.answered()
        return page("start.html", raters=[(r, done.get(r, 0)) for r in raters], others=[(r, n) for r, n in done.items()
                                                                                      if r not in raters],
                    total=total, named=bool(raters), name_help=NAME_HELP)

    def item_page(rater: str, error: str = "", status: int = 200) -> Response:
        position = answers.next_position(rater)
        if position >= total:
            return RedirectResponse(f"/results/{quote(rater)}", status_code=303)
        item = items.items[items.order(rater)[position]]
        return page("rate.html", status, rater=rater, position=position, shown=position + 1, total=total,
                    turns=item.turns, error=error, confidence=CONFIDENCE)

    async def rate(request: Request) -> Response:
        rater = rater_or_error(request)
        if not isinstance(rater, str):
            return rater
        if request.method == "GET":
            return item_page(rater)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", errors="replace")).items()}
        try:
            position = int(form.get("position", ""))
            choice = form.get("choice", "")
            confidence = int(form.get("confidence", "0"))
        except ValueError:
            position, choice, confidence = -1, "", 0
        if choice not in CHOICES or confidence not in CONFIDENCE:
            return item_page(rater, error="Choose real person or simulated, and how sure you are (1-4).", status=400)
        ms = form.get("ms", "")
        seconds = int(ms) / 1000 if ms.isdigit() else None
        answers.add(rater, position, choice, confidence, form.get("note", ""), seconds)  # a repeat is ignored
        return RedirectResponse(f"/rate/{quote(rater)}", status_code=303)

    async def results(request: Request) -> Response:
        rater = rater_or_error(request)
        if not isinstance(rater, str):
            return rater
        from simgen.rating.report import build_report, render_html

        rows = list(answers.rows)
        report = build_report(items, rows, machine.result, n_boot=n_boot, seed=int(items.settings["seed"]))
        mine = report["raters"].get(rater)
        return page("results.html", rater=rater, mine=mine, done=answers.next_position(rater) >= total, total=total,
                    machine_state=machine.state, machine_error=machine.error or "",
                    body=jinja2.utils.markupsafe.Markup(render_html(report, standalone=False)))

    async def status(request: Request) -> Response:
        return JSONResponse({"items": total, "items_id": items.items_id, "answered": answers.answered(),
                             "machine": machine.state})

    return Starlette(routes=[
        Route("/", start),
        Route("/rate/{rater}", rate, methods=["GET", "POST"]),
        Route("/results/{rater}", results),
        Route("/status.json", status),
        Mount("/static", StaticFiles(directory=WEB / "static"), name="static"),
    ])


def check_port(host: str, port: int) -> None:
    """A `RunError` when `host:port` cannot be bound (in use, or not an address of this machine)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise RunError(f"cannot listen on {host}:{port} ({e.strerror}): another program (another simgen rate?) uses "
                           "that port, or the host is not this machine's. Pass --port with a free port.") from e


def serve(app: Any, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM (answers are already on disk: stopping loses nothing)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run()
