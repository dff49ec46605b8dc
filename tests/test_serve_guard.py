"""`sas serve` against clients that misbehave or attack: the real server on a free local port, raw HTTP.

Fast: the server runs the tiny random model (the behaviour tested here does not depend on the model);
the gemma-3-270m cases (batched rows, sparse vectors, cancelling) are in tests/test_serve.py.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from contextlib import contextmanager

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

KEY = "test-key"


@pytest.fixture
def folder(tmp_path):
    """A vectors folder with three dense vectors for the tiny model (width 32, layer 1)."""
    from sas.steering.vector import SteeringVector

    vecs = tmp_path / "vecs"
    for i, name in enumerate(["a", "b", "c"]):
        SteeringVector({1: torch.full((32,), float(i + 1))}, "tiny", "caa").save(vecs / name)
    return vecs


@contextmanager
def served(tiny, folder, vectors=None, **kw):
    from sas.serve import Limits, make_app
    from sas.serve.local import serve_in_thread

    kw.setdefault("limits", Limits(max_tokens=8, max_batch=4))
    app = make_app(tiny, vectors, vectors_dir=folder, **kw)
    with serve_in_thread(app) as base:
        yield base, app


def post(base, body, key=None, path="/v1/completions", headers=None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}),
               **(headers or {})}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(base + path, content=data, headers=headers, timeout=60)


def body(**kw):
    return {"model": "tiny", "prompt": "I think", "max_tokens": 2, "temperature": 0, **kw}


def test_host_header_is_checked_and_nothing_loads_from_a_cdn(tiny, folder):
    with served(tiny, folder, allowed_hosts=["box.lan"]) as (base, _):
        port = base.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"box.lan:{port}", "LOCALHOST"):
            assert post(base, body(), headers={"Host": host}).status_code == 200, host
        for host in (f"attacker.example:{port}", "attacker.example", f"localhost.attacker.example:{port}", ""):
            r = post(base, body(), headers={"Host": host})
            assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed", (host, r.text)
            assert "--allowed-host" in r.json()["error"]["message"]
        for page in ("/docs", "/redoc"):  # Swagger UI and ReDoc pull scripts from a CDN
            assert httpx.get(base + page).status_code == 404


def test_bad_vector_names_get_4xx_without_paths_and_a_500_keeps_the_connection(tiny, folder):
    from sas.steering.vector import SteeringVector

    secret = SteeringVector({1: torch.ones(32)}, "tiny", "caa")
    with served(tiny, folder, {"operators_private_vector": secret}) as (base, app):
        assert post(base, body(steer=[{"vector": str(folder / "a")}])).status_code == 200  # an absolute spelling
        for name, status in (("a\x00b", 400), ("x" * 10_000, 400), ("/", 400), ("nope", 404),
                             ("../../etc/passwd", 403)):
            r = post(base, body(steer=[{"vector": name}]))
            assert r.status_code == status, (name[:20], r.text)
            err = r.json()["error"]
            assert err["param"] == "steer.0.vector" and err["message"], err
            # neither the server's folder nor other clients' vectors show in the message
            for leak in (str(folder.parent), "operators_private_vector"):
                assert leak not in r.text, (name[:20], r.text)

        # an unexpected error: a JSON 500, after which the same keep-alive connection still serves
        @app.get("/v1/boom")
        async def boom():
            raise RuntimeError(f"secret state in {folder}")

        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=30)
        conn.request("GET", "/v1/boom")
        r = conn.getresponse()
        err = json.loads(r.read())["error"]
        assert r.status == 500 and err["code"] == "internal_error" and str(folder) not in err["message"], err
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        conn.close()


def test_body_size_and_row_limits_come_before_tokenising(tiny, folder):
    with served(tiny, folder) as (base, _):  # the default limit: 1 MB
        r = post(base, b'{"model": "tiny", "prompt": "' + b"x" * 3_000_000 + b'"}')
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text[:300]
        r = post(base, b"x" * 3_000_000, headers={"Transfer-Encoding": "chunked"})  # no Content-Length to trust
        assert r.status_code == 413, r.text[:300]

        # 150,000 prompts (750 kB): refused for the rows they ask for, without tokenising them first (6 s)
        t = time.perf_counter()
        r = post(base, body(prompt=["a"] * 150_000))
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_rows", r.text[:300]
        assert time.perf_counter() - t < 3.0

        # one long prompt is tokenised off the event loop: /health answers meanwhile
        slow = threading.Thread(target=post, args=(base, body(prompt="word " * 190_000)))
        slow.start()
        time.sleep(0.3)
        waits = []
        while slow.is_alive():
            t = time.perf_counter()
            assert httpx.get(base + "/health", timeout=60).status_code == 200
            waits.append(time.perf_counter() - t)
        slow.join()
        assert waits and max(waits) < 0.5, waits


def test_changing_vectors_needs_a_key_and_spares_the_operators(tiny, folder):
    from sas.steering.vector import SteeringVector

    start = {"sentiment": SteeringVector({1: torch.ones(32)}, "tiny", "caa")}
    with served(tiny, folder, start) as (base, _):  # no key at all: the vectors cannot change
        r = post(base, {"name": "sentiment", "path": "a"}, path="/v1/vectors")
        assert r.status_code == 403 and r.json()["error"]["code"] == "vectors_readonly", r.text
        assert httpx.delete(base + "/v1/vectors/sentiment").status_code == 403
        assert [v["id"] for v in httpx.get(base + "/v1/vectors").json()["data"]] == ["sentiment"]

    with served(tiny, folder, start, api_key=KEY, admin_key="admin") as (base, _):
        h = {"Authorization": f"Bearer {KEY}"}
        r = post(base, {"name": "new", "path": "a"}, key=KEY, path="/v1/vectors")  # the API key is not enough
        assert r.status_code == 401, r.text
        r = post(base, {"name": "sentiment", "path": "a"}, key="admin", path="/v1/vectors")
        assert r.status_code == 409 and r.json()["error"]["code"] == "vector_exists", r.text
        r = httpx.delete(base + "/v1/vectors/sentiment", headers={"Authorization": "Bearer admin"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "vector_readonly", r.text
        assert post(base, {"name": "new", "path": "a"}, key="admin", path="/v1/vectors").status_code == 201
        r = post(base, {"name": "new", "path": "b"}, key="admin", path="/v1/vectors")
        assert r.status_code == 409, r.text  # an added name is not overwritten either
        assert httpx.delete(base + "/v1/vectors/new", headers={"Authorization": "Bearer admin"}).status_code == 200
        listed = httpx.get(base + "/v1/vectors", headers=h).json()["data"]
        assert [(v["id"], v["readonly"]) for v in listed] == [("sentiment", True)]


def test_every_spelling_of_a_file_is_one_entry_and_the_registry_is_bounded(tiny, folder):
    from sas.serve import Limits

    limits = Limits(max_tokens=8, max_batch=4, max_files=2, max_named=1)
    with served(tiny, folder, api_key=KEY, limits=limits) as (base, app):
        spellings = ["a", "./a", "././a.safetensors", str(folder / "a"), f"../{folder.name}/a", "b/../a"]
        texts = set()
        for s in spellings:
            r = post(base, body(steer=[{"vector": s, "strength": 4.0}]), key=KEY)
            assert r.status_code == 200, (s, r.text)
            texts.add(r.json()["choices"][0]["text"])
        assert len(texts) == 1
        store = app.state.store
        assert len(store._files) == 1  # one real file, loaded once
        assert httpx.get(base + "/v1/vectors", headers={"Authorization": f"Bearer {KEY}"}).json()["data"] == []
        for s in ("a", "b", "c", "a"):
            assert post(base, body(steer=[{"vector": s}]), key=KEY).status_code == 200
        assert len(store._files) == 2  # the least recently used file went
        assert post(base, {"name": "x", "path": "a"}, key=KEY, path="/v1/vectors").status_code == 201
        r = post(base, {"name": "y", "path": "b"}, key=KEY, path="/v1/vectors")
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_vectors", r.text


def test_a_row_that_breaks_its_batch_fails_alone(tiny):
    """A row the batch cannot run (here a seed past 64 bits, given past the request checks) fails; the rows
    batched with it still get the answer they get alone."""
    from sas.forward.run import encode
    from sas.serve.batching import Batcher, Job

    prompts = encode(tiny, ["I think that", "The weather is", "Once upon a"])

    def run(rows):
        events = [[] for _ in rows]
        done = threading.Event()

        def emit(i):
            def f(e):
                events[i].append(e)
                if all(ev and ev[-1][0] in ("done", "error") for ev in events):
                    done.set()
            return f

        batcher = Batcher(tiny, max_batch=8, window_s=0.2)
        try:
            batcher.submit([Job(p, 4, emit(i), temperature=1.0, seed=s) for i, (p, s) in enumerate(rows)])
            assert done.wait(60)
        finally:
            batcher.close()
        return [ev[-1] for ev in events], batcher.batches

    rows = list(zip(prompts, [1, 2**64, 2]))
    alone = [run([r])[0][0] for r in (rows[0], rows[2])]
    last, batches = run(rows)
    assert batches[0] == 3  # they ran as one batch first
    assert last[1][0] == "error" and "Overflow" in str(last[1][1])
    assert [last[0], last[2]] == alone


def test_streamed_answers_carry_their_receipt_on_the_last_chunk(tiny, folder):
    """The official client reads a streamed answer's receipt from the last chunk of each choice: what steering
    edited in that row (none for an unsteered row), the same as the non-streamed answer's."""
    openai = pytest.importorskip("openai")
    with served(tiny, folder) as (base, _):
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=60)
        steer = {"steer": [{"vector": "a", "strength": 1.0}]}
        whole = client.completions.create(model="tiny", prompt="I think", max_tokens=3, temperature=0, extra_body=steer)
        chunks = list(client.completions.create(model="tiny", prompt="I think", max_tokens=3, temperature=0,
                                                stream=True, extra_body=steer))
        last = chunks[-1].choices[0]
        assert last.finish_reason == "length" and last.model_extra["receipt"]["1"]["positions"] > 0
        assert last.model_extra["receipt"]["1"]["positions"] == whole.choices[0].model_extra["receipt"]["1"]["positions"]
        assert last.model_extra["receipt"]["1"]["edit_norm"] == pytest.approx(
            whole.choices[0].model_extra["receipt"]["1"]["edit_norm"], rel=1e-4)
        assert all("receipt" not in (c.choices[0].model_extra or {}) for c in chunks[:-1])  # only the last chunk
        chat = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                   max_tokens=2, temperature=0, stream=True))
        assert chat[-1].choices[0].model_extra["receipt"] == {}
