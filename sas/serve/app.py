"""An OpenAI-compatible HTTP server that steers: ``make_app(model, ...)`` returns the FastAPI app.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(both with ``"stream": true`` as server-sent events in OpenAI's chunk format), ``GET /v1/vectors``,
``POST /v1/vectors`` (load a saved file from the vectors folder under a new name), ``DELETE /v1/vectors/NAME``
(these two need the admin key, or the API key when there is no admin key; without either they are off).
A request steers with ``"steer": [{"vector": NAME, "strength": 4.0, "layers": [6], "positions": "after_prompt"}]``
(``extra_body`` in the ``openai`` client). Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with a 4xx status for a bad request; a bad request fails
only its own rows, never the others generated in the same batch.

Every request first passes :class:`_Guard`: its ``Host`` must be a loopback name or one the operator allowed
(a web page cannot reach the server through DNS rebinding), its body at most ``Limits.max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..forward.run import encode
from ..steering.steer import SteeringError, Term, check_term
from .batching import Batcher, Job
from .chat import chat_ids
from .schemas import ChatRequest, CompletionRequest, LoadVector, Steer, _Common
from .vectors import VectorError, VectorStore


@dataclass
class Limits:
    """Per-request and server limits; a request over one gets a 400 naming it."""

    max_tokens: int = 256  # new tokens per row
    default_max_tokens: int = 16  # when a completion request gives none (OpenAI's default)
    max_prompt_tokens: int = 2048
    max_batch: int = 16  # rows generated together (also the most rows one request may ask for)
    max_vectors: int = 4  # steering terms per request
    max_queue: int = 256  # rows waiting; more gets 429
    window_ms: float = 50.0  # how long the batcher waits for another request (at most 5 windows in all)
    max_body_bytes: int = 1_000_000  # a request body over this gets 413, unread
    max_named: int = 64  # vectors POST /v1/vectors may add
    max_files: int = 16  # vector files kept loaded for requests that name a file (least recently used go)


LOOPBACK = ("localhost", "127.0.0.1", "::1")
_log = logging.getLogger("sas.serve")


class _Guard:
    """ASGI middleware in front of every route: a ``Host`` header outside ``hosts`` gets 400 (``"*"`` in
    ``hosts`` allows any), a body over ``max_body`` bytes 413, and an unexpected error a JSON 500 after which
    the connection stays usable (Starlette's own 500 handler re-raises, and the server then drops it)."""

    def __init__(self, app, hosts: set[str], max_body: int):
        self.app, self.hosts, self.max_body = app, hosts, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        host = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        if "*" not in self.hosts and host not in self.hosts:
            return await _error(400, f"the Host header {host[:100]!r} is not one this server answers to; "
                                "connect through localhost, or start the server with --allowed-host NAME",
                                "host_not_allowed")(scope, receive, send)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return await self._too_large(scope, receive, send)
        body, more = b"", True
        while more:  # read the body here, where its size is counted (a chunked body has no Content-Length)
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the disconnect, when the client goes away

        started = False

        async def tell(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tell)
        except Exception as exc:
            _log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _error(500, f"internal error ({type(exc).__name__}); the server's log has the details",
                         "internal_error", None, "server_error")(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        await _error(413, f"the request body is over this server's limit of {self.max_body:,} bytes; send fewer or "
                     "shorter prompts", "body_too_large")(scope, receive, send)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_


def _error(status: int, message: str, code=None, param=None, type_="invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    errs = exc.errors()
    e = errs[0] if errs else {}
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    if e.get("type") == "json_invalid":
        return (f"the request body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))}); send a JSON "
                "object with Content-Type: application/json", None, "invalid_json")
    if e.get("type") == "extra_forbidden":
        return f"unknown field {param!r}; check its spelling (steering goes in \"steer\")", param, "unknown_field"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{param or 'body'}: {e.get('msg', 'invalid')}{more}", param, "invalid_value"


def make_app(model, vectors: dict | None = None, vectors_dir=None, api_key: str | None = None,
             limits: Limits | None = None, model_name: str | None = None, admin_key: str | None = None,
             allowed_hosts=()) -> FastAPI:
    """The FastAPI app serving ``model`` (a HookedTransformer).

    ``vectors``: ``{name: SteeringVector | SparseVector}`` registered at start (read-only); ``vectors_dir``:
    the one folder whose saved vector files requests and ``POST /v1/vectors`` may load (None: none);
    ``api_key``: when set, every ``/v1`` call needs ``Authorization: Bearer <api_key>``; ``admin_key``: the key
    that ``POST``/``DELETE /v1/vectors`` need (default ``api_key``; with neither, they are refused);
    ``allowed_hosts``: ``Host`` names answered besides the loopback ones (``"*"``: any);
    ``limits``: :class:`Limits`; ``model_name``: the id clients pass as ``model`` (default the model's name).
    """
    limits = limits or Limits()
    name = model_name or model.cfg.model_name
    store = VectorStore(model, vectors_dir, limits.max_named, limits.max_files)
    for vname, vec in (vectors or {}).items():
        store.register(vname, vec, readonly=True)
    batcher = Batcher(model, limits.max_batch, limits.window_ms / 1000, limits.max_queue)
    admin_key = admin_key or api_key

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    # no /docs or /redoc: their pages load scripts from a CDN
    app = FastAPI(title="sas serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(_Guard, hosts={*LOOPBACK, *(h.lower() for h in allowed_hosts)},
                       max_body=limits.max_body_bytes)
    app.state.store, app.state.batcher, app.state.limits = store, batcher, limits

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.code, exc.param, exc.type)

    @app.exception_handler(VectorError)
    async def _vector_error(request, exc: VectorError):
        return _error(exc.status, str(exc), exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        message, param, code = _validation_message(exc)
        return _error(400, message, code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), None, None,
                      "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    def check_key(request: Request, key: str | None) -> None:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                           "invalid_api_key", None, "authentication_error")

    def auth(request: Request) -> None:
        if api_key is not None:
            check_key(request, api_key)

    def admin(request: Request) -> None:
        if admin_key is None:
            raise ApiError(403, "changing the vectors is off on this server: start it with --api-key or --admin-key "
                           "to allow POST and DELETE /v1/vectors with that key", "vectors_readonly", None,
                           "permission_error")
        check_key(request, admin_key)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "queued_rows": batcher.pending(), "batches_run": len(batcher.batches),
                "rows_run": sum(batcher.batches), "tokens_run": batcher.tokens}

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sas",
                                            "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model}]}

    @app.get("/v1/vectors", dependencies=[Depends(auth)])
    async def list_vectors():
        return {"object": "list", "data": store.list()}

    @app.post("/v1/vectors", dependencies=[Depends(admin)], status_code=201)
    async def load_vector(body: LoadVector):
        return await run_in_threadpool(store.add, body.name, body.path)

    @app.delete("/v1/vectors/{vname:path}", dependencies=[Depends(admin)])
    async def delete_vector(vname: str):
        store.remove(vname)
        return {"id": vname, "object": "steering_vector", "deleted": True}

    def resolve_steer(specs: list[Steer]) -> list[Term]:
        if len(specs) > limits.max_vectors:
            raise ApiError(400, f"{len(specs)} steering terms, more than this server's limit of {limits.max_vectors}",
                           "too_many_vectors", "steer")
        terms = []
        for i, s in enumerate(specs):
            vec = resolve(s.vector, f"steer.{i}.vector", "vector")
            cond = None if s.condition is None else resolve(s.condition, f"steer.{i}.condition", "condition")
            try:  # the steering surface checks a term as sas.steer does
                terms.append(check_term(model, Term(vec, float(s.strength), s.layers, s.positions, cond)))
            except SteeringError as e:
                raise ApiError(400, f"steer.{i} ({s.vector!r}): {e}", e.code, f"steer.{i}.{e.field}") from e
        return terms

    def resolve(ref: str, param: str, want: str):
        """The vector or condition ``ref`` names (a registered name or a file under the vectors folder)."""
        from ..steering.condition import Condition

        try:
            got = store.get(ref)
        except VectorError as e:
            e.param = param
            raise
        if isinstance(got, Condition) != (want == "condition"):
            other = "condition" if want == "vector" else "vector"
            raise ApiError(400, f"{param}: {ref!r} is a {other}, not a {want}; name it in \"{other}\"",
                           f"not_a_{want}", param)
        return got

    def check_request(req: _Common, n_prompts: int) -> int:
        """Check what needs no tokenising (model, fields, max_tokens, rows, queue); the request's max_tokens."""
        if req.model != name:
            raise ApiError(404, f"the model {req.model!r} is not served here; this server serves {name!r}",
                           "model_not_found", "model")
        bad = req.unsupported()
        if bad:
            raise ApiError(400, f"{bad!r} is not supported by this server; leave it out", "unsupported_parameter", bad)
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens}",
                           "max_tokens_exceeded", "max_tokens")
        n_rows = n_prompts * req.n
        if n_rows > limits.max_batch:
            raise ApiError(400, f"{n_prompts} prompt(s) x n={req.n} = {n_rows} rows, over this server's limit of "
                           f"{limits.max_batch}", "too_many_rows", "n")
        if batcher.pending() + n_rows > limits.max_queue:
            raise ApiError(429, "the server is busy (queue full); retry shortly", "queue_full", None, "rate_limit_error")
        return max_tokens

    def tokenize(fn, *args):
        """``fn(model, *args)`` in a worker thread (a long prompt must not stall the event loop)."""
        def run():
            with batcher.tokenizer_lock:
                return fn(model, *args)
        return run_in_threadpool(run)

    async def prepare(req: _Common, max_tokens: int, prompts: list[list[int]], stops: list[str]):
        for i, ids in enumerate(prompts):
            if len(ids) > limits.max_prompt_tokens:
                raise ApiError(400, f"prompt {i} has {len(ids)} tokens, over this server's limit of "
                               f"{limits.max_prompt_tokens}", "context_length_exceeded", "prompt")
        terms = await run_in_threadpool(resolve_steer, req.steer)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        jobs = []
        for k, ids in enumerate(prompts):
            for j in range(req.n):
                index = k * req.n + j

                def emit(event, index=index):
                    loop.call_soon_threadsafe(events.put_nowait, (index, event))

                seed = None if req.seed is None else req.seed + j
                jobs.append(Job(ids, max_tokens, emit, req.temperature, req.top_p, req.top_k, seed,
                                list(req.stop or []) + stops, terms, req.ignore_eos))
        return jobs, events, terms

    def steering_info(terms: list[Term], specs: list[Steer]) -> list[dict]:
        return [{"vector": s.vector, "strength": t.strength, "layers": t.layers, "positions": t.positions,
                 "kind": t.vector.kind, **({"condition": s.condition} if s.condition else {})}
                for t, s in zip(terms, specs)]

    async def collect(jobs, events, request: Request) -> list[dict]:
        results: dict[int, dict] = {}
        try:
            while len(results) < len(jobs):
                try:
                    index, (kind, value) = await asyncio.wait_for(events.get(), 0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():  # nobody will read the answer: stop generating it
                        raise ApiError(499, "the client closed the connection", "client_closed") from None
                    continue
                if kind == "done":
                    results[index] = value
                elif kind == "error":
                    raise ApiError(500, f"generation failed: {type(value).__name__}: {value}", "internal_error", None,
                                   "server_error")
        finally:  # done, failed, or abandoned: free the rows still queued or running
            for j in jobs:
                j.cancelled = True
        return [results[i] for i in range(len(jobs))]

    def usage(results: list[dict]) -> dict:
        p = sum(r["prompt_tokens"] for r in results)
        c = sum(r["completion_tokens"] for r in results)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def stream(jobs, events, chunk, include_usage: bool):
        async def body():
            finished = 0
            results = []
            try:
                while finished < len(jobs):
                    index, (kind, value) = await events.get()
                    if kind == "token":
                        yield f"data: {json.dumps(chunk(index, value, None))}\n\n"
                    elif kind == "done":
                        finished += 1
                        results.append(value)
                        last = chunk(index, None, value["finish_reason"])
                        last["choices"][0]["receipt"] = value["receipt"]  # an answer's last chunk: what was edited
                        yield f"data: {json.dumps(last)}\n\n"
                    else:
                        err = {"message": f"generation failed: {type(value).__name__}: {value}",
                               "type": "server_error", "param": None, "code": "internal_error"}
                        yield f"data: {json.dumps({'error': err})}\n\n"
                        return
                if include_usage:
                    yield f"data: {json.dumps({**chunk(0, None, None), 'choices': [], 'usage': usage(results)})}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # the client went away (or we are done): free the rows
                for j in jobs:
                    j.cancelled = True

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(req: CompletionRequest, request: Request):
        prompts = req.prompts()
        if not prompts or any(not p for p in prompts):
            raise ApiError(400, "prompt is empty; give a non-empty string or list of strings", "invalid_value", "prompt")
        max_tokens = check_request(req, len(prompts))
        jobs, events, terms = await prepare(req, max_tokens, await tokenize(encode, prompts), [])
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        batcher.submit(jobs)
        if req.stream:
            def chunk(index, text, finish):
                return {"id": rid, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}]}
            return stream(jobs, events, chunk, bool((req.stream_options or {}).get("include_usage")))
        results = await collect(jobs, events, request)
        return {"id": rid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"index": i, "text": r["text"], "logprobs": None, "finish_reason": r["finish_reason"],
                             "receipt": r["receipt"]} for i, r in enumerate(results)],
                "usage": usage(results), "steering": steering_info(terms, req.steer)}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat_completions(req: ChatRequest, request: Request):
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        max_tokens = check_request(req, 1)
        ids, stops = await tokenize(chat_ids, messages)
        jobs, events, terms = await prepare(req, max_tokens, [ids], stops)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        batcher.submit(jobs)
        if req.stream:
            started: set[int] = set()

            def chunk(index, text, finish):
                delta = {} if text is None else {"content": text}
                if index not in started and finish is None:
                    started.add(index)
                    delta = {"role": "assistant", **delta}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return stream(jobs, events, chunk, bool((req.stream_options or {}).get("include_usage")))
        results = await collect(jobs, events, request)
        return {"id": rid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": r["text"]}, "logprobs": None,
                             "finish_reason": r["finish_reason"], "receipt": r["receipt"]}
                            for i, r in enumerate(results)],
                "usage": usage(results), "steering": steering_info(terms, req.steer)}

    return app
