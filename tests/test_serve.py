"""`sas serve` tested as a client uses it: the real server on a free local port, the official `openai` client.

The server runs in a thread of the test process on the session's gemma-3-270m (one model in memory);
requests go over real HTTP on 127.0.0.1. Vectors are real: a sentiment CAA vector (layer 6) and a SAS
vector in the shipped SAE gemma-3-270m-L9-4k, both saved to files and loaded by the server.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

PROMPT = "I think that the movie was"
N = 8  # new tokens per request: enough to tell texts apart, cheap on a shared CPU
KEY = "test-key"


@pytest.fixture(scope="module")
def vectors(gemma, tmp_path_factory):
    """A dense sentiment CAA vector and a sparse SAS one, saved under a vectors folder."""
    import sas
    from sas.concepts.tasks import sentiment_pairs
    from sas.load.saes import load_sae
    from sas.methods.sas import sas_vector_from_texts

    pos, neg = sentiment_pairs()
    dense = sas.contrastive_vector(gemma, pos, neg, [6], behavior="sentiment")
    sparse = sas_vector_from_texts(gemma, load_sae("gemma-3-270m-L9-4k", gemma), pos, neg, tau=0.1,
                                   behavior="sentiment")
    folder = tmp_path_factory.mktemp("vectors")
    dense.save(folder / "sentiment")
    sparse.save(folder / "sentiment_sas")
    # the right kind of file for another model: width 32, not 640
    sas.SteeringVector({6: torch.ones(32)}, "tiny", "caa").save(folder / "narrow")
    return folder, dense, sparse


@pytest.fixture(scope="module")
def server(gemma, vectors):
    """``(base_url, app)`` of a running server with the dense vector registered as ``sentiment``."""
    from sas.serve import Limits, make_app
    from sas.serve.local import serve_in_thread

    folder, dense, _ = vectors
    torch.set_num_threads(1)
    app = make_app(gemma, {"sentiment": dense}, vectors_dir=folder, api_key=KEY,
                   limits=Limits(max_tokens=64, max_batch=8, max_vectors=3, max_prompt_tokens=512, window_ms=100))
    with serve_in_thread(app) as base:
        yield base, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=300)


def complete(client, steer=None, prompt=PROMPT, **kw):
    kw = {"max_tokens": N, "temperature": 0, **kw}
    extra = {"steer": steer} if steer is not None else None
    return client.completions.create(model="gemma-3-270m", prompt=prompt, extra_body=extra, **kw)


def _raw(base, body, key=KEY, path="/v1/completions"):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(base + path, content=data, headers=headers, timeout=60)


@pytest.mark.slow
def test_completions_steering_streaming_chat(gemma, server, client):
    from sas.forward.generate import generate

    plain = complete(client)
    assert plain.choices[0].text == generate(gemma, [PROMPT], N)[0]  # the server generates as sas.generate
    assert plain.usage.completion_tokens == N and plain.choices[0].finish_reason == "length"

    zero = complete(client, [{"vector": "sentiment", "strength": 0.0}])
    assert zero.choices[0].text == plain.choices[0].text  # strength 0 is token-for-token unsteered

    steered = complete(client, [{"vector": "sentiment", "strength": 2.0, "layers": [6]}])
    assert steered.choices[0].text != plain.choices[0].text
    assert steered.model_extra["steering"] == [{"vector": "sentiment", "strength": 2.0, "layers": [6],
                                                "positions": "all", "kind": "dense"}]
    # each choice carries its receipt: what the hook edited in that row, measured, not intended
    receipt = steered.choices[0].model_extra["receipt"]
    assert list(receipt) == ["6"] and receipt["6"]["positions"] >= N and receipt["6"]["edit_norm"] > 0
    assert zero.choices[0].model_extra["receipt"] == {} and plain.choices[0].model_extra["receipt"] == {}

    chunks = list(complete(client, [{"vector": "sentiment", "strength": 2.0, "layers": [6]}], stream=True))
    assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in chunks) == steered.choices[0].text
    # a streamed answer's last chunk carries the same receipt as the whole answer
    streamed = chunks[-1].choices[0].model_extra["receipt"]
    assert streamed["6"]["positions"] == receipt["6"]["positions"]
    assert streamed["6"]["edit_norm"] == pytest.approx(receipt["6"]["edit_norm"], rel=1e-3)

    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model="gemma-3-270m", messages=msgs, max_tokens=12, temperature=0)
    text = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant" and "Paris" in text
    stream = client.chat.completions.create(model="gemma-3-270m", messages=msgs, max_tokens=12, temperature=0,
                                            stream=True)
    parts = list(stream)
    assert parts[0].choices[0].delta.role == "assistant" and parts[-1].choices[0].model_extra["receipt"] == {}
    assert "".join(p.choices[0].delta.content or "" for p in parts) == text


@pytest.mark.slow
def test_concurrent_requests_keep_their_own_steering(server, client, vectors):
    """Four requests with different vectors run in one batch; each row equals the same request run alone."""
    _, app = server
    requests = [None,
                [{"vector": "sentiment", "strength": 1.5}],
                [{"vector": "sentiment", "strength": -1.5}],
                [{"vector": "sentiment_sas", "strength": 8.0}],  # a file in the vectors folder: sparse, layer 9
                [{"vector": "sentiment_sas", "strength": 0.0}, {"vector": "sentiment", "strength": 0.0}]]
    alone = [complete(client, r).choices[0].text for r in requests]
    assert len(set(alone[:4])) == 4, alone  # every vector changes the text, each differently
    assert alone[4] == alone[0]  # strength 0, sparse and dense: unsteered
    before = list(app.state.batcher.batches)
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: complete(client, r).choices[0].text, requests))
    sizes = app.state.batcher.batches[len(before):]
    assert max(sizes) >= 2, f"the requests were not batched together: batch sizes {sizes}"
    assert together == alone

    # sampling: a seed makes a row reproducible, also batched with other rows
    def sample(_):
        return complete(client, [{"vector": "sentiment", "strength": 1.0}], temperature=0.9, top_p=0.9,
                        seed=7).choices[0].text

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(sample, range(2))
    assert a == b


@pytest.mark.slow
def test_vector_endpoints(server, client, vectors):
    base, _ = server
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(base + "/v1/vectors", json={"name": "sas9", "path": "sentiment_sas"}, headers=h)
    assert r.status_code == 201 and r.json()["kind"] == "sparse" and r.json()["layers"] == [9]
    listed = {v["id"]: v for v in httpx.get(base + "/v1/vectors", headers=h).json()["data"]}
    assert listed["sentiment"]["kind"] == "dense" and listed["sentiment"]["layers"] == [6]
    assert "sas9" in listed
    r = httpx.post(base + "/v1/vectors", json={"name": "narrow"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_width"
    assert "width 32" in r.json()["error"]["message"]
    r = httpx.post(base + "/v1/vectors", json={"name": "up", "path": "../../etc/passwd"}, headers=h)
    assert r.status_code == 403
    assert httpx.delete(base + "/v1/vectors/sas9", headers=h).status_code == 200
    assert [m.id for m in client.models.list().data] == ["gemma-3-270m"]


@pytest.mark.slow
def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(server, client):
    base, _ = server
    cases = [
        ({"steer": [{"vector": "nope"}]}, 404, "vector_not_found"),
        ({"steer": [{"vector": "narrow"}]}, 400, "wrong_width"),
        ({"steer": [{"vector": "sentiment", "layers": [40]}]}, 400, "layer_out_of_range"),
        ({"steer": [{"vector": "sentiment", "layers": [5]}]}, 400, "layer_not_in_vector"),
        ({"steer": [{"vector": "sentiment"}] * 4}, 400, "too_many_vectors"),
        ({"stear": [{"vector": "sentiment"}]}, 400, "unknown_field"),
        ({"max_tokens": 10_000}, 400, "max_tokens_exceeded"),
        ({"temperature": -1}, 400, "invalid_value"),
        ({"top_p": 0}, 400, "invalid_value"),
        ({"model": "gpt-4"}, 404, "model_not_found"),
        ({"prompt": "word " * 600}, 400, "context_length_exceeded"),
    ]
    for extra, status, code in cases:
        body = {"model": "gemma-3-270m", "prompt": PROMPT, "max_tokens": 4, **extra}
        r = _raw(base, body)
        assert r.status_code == status, (extra, r.text)
        err = r.json()["error"]
        assert err["code"] == code and err["message"], (extra, err)
    # NaN and inf: JSON's literals (Python's json accepts them) and strings
    for raw in ('NaN', 'Infinity', '"nan"'):
        r = _raw(base, '{"model": "gemma-3-270m", "prompt": "x", "steer": [{"vector": "sentiment", "strength": %s}]}'
                 % raw)
        assert r.status_code == 400 and r.json()["error"]["param"] == "steer.0.strength", r.text
    r = _raw(base, '{"model": "gemma-3-270m", "prompt": ')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = _raw(base, {"model": "gemma-3-270m", "prompt": PROMPT}, key="wrong")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.NotFoundError, match="unknown vector"):
        complete(client, [{"vector": "nope"}])
    with pytest.raises(openai.BadRequestError, match="finite"):
        complete(client, [{"vector": "sentiment", "strength": "inf"}])
    # and it still serves
    assert complete(client, max_tokens=2).usage.completion_tokens == 2
    assert httpx.get(base + "/health").json()["status"] == "ok"


def test_per_row_steering_matches_each_row_alone(tiny):
    """Fast: a batch whose rows carry different vectors and strengths (dense and 0) gives each row the
    tokens that row gets alone under ``sas.steer`` (tiny random model, real generation path)."""
    from sas.forward.generate import generate_tokens
    from sas.forward.run import encode
    from sas.serve.batching import Job, Term, run_batch
    from sas.steering.steer import steer
    from sas.steering.vector import SteeringVector

    torch.manual_seed(0)
    a = SteeringVector({1: torch.randn(32) * 8}, "tiny", "caa")
    b = SteeringVector({1: torch.randn(32) * 8, 2: torch.randn(32) * 8}, "tiny", "caa", positions="all")
    prompts = encode(tiny, ["I think that", "The weather is very", "Once upon a time there"])
    rows = [[Term(a, 1.0, [1], "after_prompt")], [Term(b, -2.0, [1, 2], "all")], [Term(a, 0.0, [1], "after_prompt")]]
    out = [[] for _ in rows]
    jobs = [Job(p, 6, lambda e, i=i: out[i].append(e), steer=r) for i, (p, r) in enumerate(zip(prompts, rows))]
    run_batch(tiny, jobs)
    done = [next(v for k, v in events if k == "done") for events in out]
    for p, r, d, events in zip(prompts, rows, done, out):
        with steer(tiny, r[0].vector, r[0].strength, r[0].layers, r[0].positions):
            alone = generate_tokens(tiny, [p], 6)[0]
        assert d["text"] == tiny.tokenizer.decode(alone, skip_special_tokens=True)
        assert "".join(v for k, v in events if k == "token") == d["text"]  # the streamed pieces add up
    plain = generate_tokens(tiny, [prompts[2]], 6)[0]
    assert done[2]["text"] == tiny.tokenizer.decode(plain, skip_special_tokens=True)  # strength 0: unsteered
    assert done[0]["text"] != tiny.tokenizer.decode(generate_tokens(tiny, [prompts[0]], 6)[0], skip_special_tokens=True)


@pytest.mark.slow
def test_a_bad_seed_or_strength_fails_only_its_own_request(server, client, vectors):
    """Four requests sent together, two of them with a seed past 64 bits or a strength whose product with the
    vector overflows float32 (each finite in float64): those two get a 400 naming the field, the other two
    the answer they get alone."""
    _, dense, _ = vectors
    peak = float(dense.directions[6].abs().max())
    assert peak > 2  # so the strength below is itself finite in float32: only strength x vector overflows
    big = 2 * float(torch.finfo(torch.float32).max) / peak
    requests = [dict(steer=[{"vector": "sentiment", "strength": 1.5}]),
                dict(temperature=1, seed=2**64),
                dict(steer=[{"vector": "sentiment", "strength": big}]),
                dict(steer=[{"vector": "sentiment_sas", "strength": 1e39}]),
                dict()]
    alone = {0: complete(client, **requests[0]).choices[0].text, 4: complete(client, **requests[4]).choices[0].text}

    def run(kw):
        try:
            return complete(client, **kw).choices[0].text
        except openai.BadRequestError as e:
            return e

    with ThreadPoolExecutor(len(requests)) as pool:
        out = list(pool.map(run, requests))
    assert out[0] == alone[0] and out[4] == alone[4], out
    for i, param in ((1, "seed"), (2, "steer.0.strength"), (3, "steer.0.strength")):
        assert isinstance(out[i], openai.BadRequestError), (i, out[i])
        assert out[i].body["param"] == param, out[i].body
    assert "float32" in out[2].body["message"] and "smaller multiplier" in out[2].body["message"]


@pytest.mark.slow
def test_vector_files_resolve_once_and_share_their_sae(server, client, vectors):
    """Every spelling of a file in the vectors folder is one loaded vector; two sparse vectors in one SAE
    hold one copy of it; a spelling never becomes a registered name."""
    base, app = server
    folder, _, sparse = vectors
    (sparse * 0.5).save(folder / "half_sas")
    store = app.state.store
    spellings = ["sentiment_sas", "./sentiment_sas", "././sentiment_sas.safetensors", str(folder / "sentiment_sas"),
                 f"../{folder.name}/sentiment_sas"]
    texts = {complete(client, [{"vector": s, "strength": 8.0}], max_tokens=3).choices[0].text for s in spellings}
    assert len(texts) == 1
    assert [p.name for p in store._files].count("sentiment_sas.safetensors") == 1
    complete(client, [{"vector": "half_sas", "strength": 8.0}], max_tokens=1)
    r = httpx.post(base + "/v1/vectors", json={"name": "sas_again", "path": "./sentiment_sas"},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 201, r.text
    a, b, again = store.get("sentiment_sas"), store.get("half_sas"), store.get("sas_again")
    assert again is a and a.saes[9] is b.saes[9]  # one vector per file, one SAE for both files
    assert len(store._saes) == 1
    listed = httpx.get(base + "/v1/vectors", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert not {v["id"] for v in listed} & set(spellings), listed
    assert httpx.delete(base + "/v1/vectors/sas_again", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.mark.slow
def test_an_abandoned_request_stops_generating(gemma):
    """A client that gives up after 3 s on a non-streaming request (n=16, 2,048 tokens each) frees the server: its
    rows stop soon after (a few hundred tokens each on a quiet machine, not 2,048), and the next request does not
    wait for them."""
    from sas.serve import Limits, make_app
    from sas.serve.local import serve_in_thread

    torch.set_num_threads(1)
    app = make_app(gemma, limits=Limits(max_tokens=2048, max_batch=16))
    with serve_in_thread(app) as base:
        impatient = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=3)
        with pytest.raises(openai.APITimeoutError):
            impatient.completions.create(model="gemma-3-270m", prompt=PROMPT, n=16, max_tokens=2048, temperature=0,
                                         extra_body={"ignore_eos": True})
        t = time.perf_counter()
        patient = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
        after = patient.completions.create(model="gemma-3-270m", prompt=PROMPT, max_tokens=1)
        waited = time.perf_counter() - t
        assert after.usage.completion_tokens == 1
        generated = httpx.get(base + "/health").json()["tokens_run"]
    assert generated < 16 * 2048 // 4, f"{generated} tokens generated for an abandoned request of 16 x 2048"
    assert waited < 60, waited


@pytest.mark.slow
def test_a_dotted_vector_name_is_the_file_of_that_name(server, client, vectors):
    """``caa_tau0.1`` in the vectors folder is that file, not ``caa_tau0.safetensors`` beside it."""
    folder, dense, _ = vectors
    dense.save(folder / "caa_tau0.1")
    (dense * 3.0).save(folder / "caa_tau0")
    r = _raw(server[0], {"name": "dotted", "path": "caa_tau0.1"}, path="/v1/vectors")
    assert r.status_code == 201, r.text
    assert r.json()["norms"] == {"6": round(dense.norms()[6], 4)}
