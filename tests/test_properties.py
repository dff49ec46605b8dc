"""Property-based tests (hypothesis) over the public loaders, vector arithmetic, ``steer`` arguments and the
CLI's argument parsing. Each property holds for every input hypothesis generates; the number of examples is
bounded so the file runs in well under a minute on the tiny model."""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from conftest import hooks_left
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from sas import cli
from sas.load.data import ABPair, load_pairs
from sas.steering.steer import steer
from sas.steering.vector import POSITIONS, SteeringVector

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODEL = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LAYER = 1

letters = st.sampled_from("ABCDEFGH")
# any text a user's file can hold: every code point but lone surrogates (not encodable)
texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80).filter(lambda s: s.strip())


@st.composite
def pair_lists(draw):
    n = draw(st.integers(1, 5))
    out = []
    for _ in range(n):
        a = draw(letters)
        b = draw(letters.filter(lambda x: x != a))
        out.append(ABPair(draw(texts), a, b))
    return out


def _row(p: ABPair, spaced: bool) -> dict:
    fmt = " ({})" if spaced else "({})"
    return {"question": p.question, "answer_matching_behavior": fmt.format(p.matching),
            "answer_not_matching_behavior": fmt.format(p.not_matching)}


# ------------------------------------------------------------------------------ loaders
@FAST
@given(pairs=pair_lists(), layout=st.sampled_from(["list", "pretty", "jsonl", "jsonl-crlf", "jsonl-blank"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), ascii_only=st.booleans(), spaced=st.booleans())
def test_load_pairs_reads_back_what_was_written(pairs, layout, encoding, ascii_only, spaced):
    rows = [_row(p, spaced) for p in pairs]
    dump = lambda x, **kw: json.dumps(x, ensure_ascii=ascii_only, **kw)  # noqa: E731
    if layout == "list":
        text = dump(rows)
    elif layout == "pretty":
        text = dump(rows, indent=2)
    else:
        sep = "\r\n" if layout == "jsonl-crlf" else "\n\n  \n" if layout == "jsonl-blank" else "\n"
        text = sep.join(dump(r) for r in rows) + sep
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.v1.jsonl"
        path.write_bytes(text.encode(encoding))
        assert load_pairs(path) == pairs


@FAST
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                                      lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                          st.sampled_from(["question", "prompt", "answer_matching_behavior",
                                                           "answer_not_matching_behavior", "x"]), c, max_size=4),
                                      max_leaves=8).map(lambda x: json.dumps(x).encode())))
def test_load_pairs_gives_pairs_or_a_clear_error(content):
    """Whatever bytes a file holds: a list of pairs, or a ValueError that names the file. Never another error."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.jsonl"
        path.write_bytes(content)
        try:
            out = load_pairs(path)
        except ValueError as e:
            assert "f.jsonl" in str(e)
            return
        assert out and all(isinstance(p, ABPair) and isinstance(p.question, str) and p.question.strip()
                           and p.matching != p.not_matching for p in out)


# ----------------------------------------------------------------------- vector arithmetic
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
layer_sets = st.sets(st.integers(0, 5), min_size=1, max_size=3)


@st.composite
def vectors(draw, layers=None):
    layers = draw(layer_sets) if layers is None else layers
    dirs = {x: torch.tensor(draw(st.lists(finite, min_size=4, max_size=4)), dtype=torch.float32) for x in layers}
    return SteeringVector(dirs, "m", "caa", "b")


@FAST
@given(a=vectors(), b=vectors(), c=finite.filter(lambda x: abs(x) > 1e-3))
def test_vector_arithmetic(a, b, c):
    s = a + b
    assert s.layers == sorted(set(a.layers) | set(b.layers))
    for x in s.layers:
        want = a.directions.get(x, torch.zeros(4)) + b.directions.get(x, torch.zeros(4))
        torch.testing.assert_close(s.directions[x], want)
        torch.testing.assert_close((s - b).directions[x], a.directions.get(x, torch.zeros(4)), atol=1e-3, rtol=1e-4)
    for x in a.layers:
        torch.testing.assert_close((a * c).directions[x], a.directions[x] * c)
        torch.testing.assert_close((c * a).directions[x], a.directions[x] * c)
        torch.testing.assert_close((a / c).directions[x], a.directions[x] / c, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close((-(-a)).directions[x], a.directions[x])
    # arithmetic never changes its operands
    before = {x: t.clone() for x, t in a.directions.items()}
    _ = a + a, a * c, -a
    assert all(torch.equal(before[x], a.directions[x]) for x in before)


@FAST
@given(a=vectors(), c=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_vector_scaled_by_a_non_finite_number_is_refused(a, c):
    with pytest.raises(ValueError):
        a * c


names = st.text(st.sampled_from("abcXYZ019_-."), min_size=1, max_size=20).filter(
    lambda s: s.strip(".") and not s.startswith(".") and s not in (".", ".."))


@FAST
@given(a=vectors(), name=names, suffix=st.booleans())
def test_save_load_round_trip_any_name(a, name, suffix):
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / (name + (".safetensors" if suffix else ""))
        path = a.save(target)
        want = target.name if target.name.endswith(".safetensors") else target.name + ".safetensors"
        assert path == Path(d) / want
        back = SteeringVector.load(target)
        assert back.layers == a.layers and back.hook_point == a.hook_point and back.model == a.model
        for x in a.layers:
            assert torch.equal(back.directions[x], a.directions[x])


@FAST
@given(names_=st.lists(names, min_size=2, max_size=4, unique=True))
@example(names_=["caa_sent_tau0.1", "caa_sent_tau0.2"])
@example(names_=["my.pairs.v1", "my.pairs.v2", "my.pairs.v1.safetensors.x"])
def test_distinct_names_give_distinct_files(names_):
    """Names differing only after a dot (tau0.1, tau0.2) never overwrite each other."""
    assume(len({n.removesuffix(".safetensors") for n in names_}) == len(names_))
    with tempfile.TemporaryDirectory() as d:
        paths = {SteeringVector({0: torch.full((4,), float(i))}, "m", "caa").save(Path(d) / n)
                 for i, n in enumerate(names_)}
        assert len(paths) == len(names_)
        for i, n in enumerate(names_):
            assert SteeringVector.load(Path(d) / n).directions[0][0].item() == float(i)


_SAE = None


def _sae():
    """One small random JumpReLU SAE at blocks.1 (d_in 4, 16 features), made once."""
    global _SAE
    if _SAE is None:
        from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

        torch.manual_seed(0)
        _SAE = JumpReLUSAE(JumpReLUSAEConfig(d_in=4, d_sae=16, apply_b_dec_to_input=False))
        with torch.no_grad():
            _SAE.W_dec.normal_()
        _SAE.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
        _SAE.requires_grad_(False)
    return _SAE


codes = st.dictionaries(st.integers(0, 15), finite, min_size=1, max_size=5).map(
    lambda d: torch.zeros(16).index_put_((torch.tensor(list(d)),), torch.tensor(list(d.values()))))


@FAST
@given(a=codes, b=codes, c=finite, name=names)
def test_sparse_vector_arithmetic_and_round_trip(a, b, c, name):
    from sas.steering.sparse import SparseVector

    sae = _sae()
    va, vb = SparseVector({1: a}, {1: sae}, "m"), SparseVector({1: b}, {1: sae}, "m")
    torch.testing.assert_close((va + vb).codes[1], a + b)
    torch.testing.assert_close((va - vb).codes[1], a - b)
    torch.testing.assert_close((c * va).codes[1], c * a)
    with tempfile.TemporaryDirectory() as d:
        (va * c).save(Path(d) / name)
        back = SparseVector.load(Path(d) / name, saes={1: sae})
        assert torch.equal(back.codes[1], (va * c).codes[1]) and back.saes[1] is sae


# ----------------------------------------------------------------------- steer arguments
def _added(model, vec, mult, layers, positions) -> torch.Tensor:
    tokens = torch.tensor([[2, 651, 5304, 563, 1091]])
    store = {}

    def run(ctx):
        with ctx:
            with model.hooks(fwd_hooks=[(f"blocks.{LAYER}.hook_resid_post",
                                         lambda x, hook: store.__setitem__("x", x.clone()))]):
                model(tokens, stop_at_layer=LAYER + 1)
        return store["x"]

    return run(steer(model, vec, mult, layers, positions)) - run(nullcontext())


@MODEL
@given(mult=st.one_of(st.floats(-50, 50, allow_nan=False), st.sampled_from([float("nan"), float("inf")])),
       layers=st.one_of(st.none(), st.lists(st.integers(-3, 6), max_size=3)),
       positions=st.one_of(st.none(), st.sampled_from(POSITIONS + ("last", "", "ALL"))))
def test_steer_arguments(tiny, mult, layers, positions):
    """Valid arguments steer by exactly mult x direction at the chosen positions; invalid ones raise a
    ValueError before anything runs; either way no hook is left on the model."""
    v = SteeringVector({LAYER: torch.linspace(-1, 1, 32)}, "tiny", "caa", positions="all")
    ok = math.isfinite(mult) and positions not in ("last", "", "ALL", "front") and \
        (layers is None or (layers and set(layers) <= {LAYER}))
    if not ok:
        with pytest.raises(ValueError):
            _added(tiny, v, mult, layers, positions)
    else:
        added = _added(tiny, v, mult, layers, positions)
        want = mult * v.directions[LAYER]
        if positions in (None, "all"):
            torch.testing.assert_close(added[0], want.expand(5, 32), atol=1e-4, rtol=1e-4)
        else:  # after_prompt on one pass over a prompt: its last token only
            torch.testing.assert_close(added[0, -1], want, atol=1e-4, rtol=1e-4)
            assert added[0, :-1].abs().max() == 0
    assert hooks_left(tiny) == {}


@MODEL
@given(mults=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=3))
def test_steer_is_linear_in_vectors(tiny, mults):
    vs = [SteeringVector({LAYER: torch.randn(32, generator=torch.Generator().manual_seed(i))}, "tiny", "caa",
                         positions="all") for i in range(len(mults))]
    added = _added(tiny, vs, mults, None, None)
    want = sum(m * v.directions[LAYER] for m, v in zip(mults, vs))
    torch.testing.assert_close(added[0, 2], want, atol=1e-3, rtol=1e-4)


# ----------------------------------------------------------------------------- CLI parsing
@FAST
@given(xs=st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=8), space=st.booleans())
def test_ints_round_trip(xs, space):
    assert cli._ints((", " if space else ",").join(map(str, xs))) == xs


@FAST
@given(xs=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=8))
def test_floats_round_trip(xs):
    assert cli._floats(",".join(repr(x) for x in xs)) == xs


@FAST
@given(s=st.text(max_size=20))
def test_ints_and_floats_give_numbers_or_an_argument_error(s):
    for parse, kind in ((cli._ints, int), (cli._floats, float)):
        try:
            out = parse(s)
        except argparse.ArgumentTypeError:
            continue
        assert out and all(type(x) is kind for x in out)
        if kind is float:
            assert all(math.isfinite(x) for x in out)


@FAST
@given(xs=st.lists(st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 3)), min_size=1, max_size=5),
       flag=st.sampled_from(["--multipliers", "--sas-multipliers"]), before=st.booleans())
def test_negative_multipliers_reach_the_parser(xs, flag, before):
    """``--multipliers -2,-1,0`` (a value starting with '-') parses to the same numbers as ``--multipliers=...``."""
    value = ",".join(f"{x:g}" for x in xs)
    rest = ["--behavior", "sycophancy", "--layers", "5"]
    argv = ["compare"] + ([flag, value] + rest if before else rest + [flag, value])
    args = cli.parser().parse_args(cli.split_negative_numbers(argv))
    assert getattr(args, flag[2:].replace("-", "_")) == [float(f"{x:g}") for x in xs]
    assert args.layers == [5] and args.behavior == ["sycophancy"]


# ------------------------------------------------------------ concept and vector files from someone else
CONCEPT_KEYS = ["name", "pairs", "scorer", "prefix", "prompts", "concept_words", "min_pairs", "scorer_settings",
                "actadd", "description", "license", "other"]
scalars = st.none() | st.booleans() | st.integers(-10, 100) | st.floats() | st.text(max_size=12)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.sampled_from(["positive", "negative", "prompt", "name", "words", "x"]), c, max_size=3), max_leaves=10)


@st.composite
def concept_docs(draw):
    """A concept mapping near the valid one (valid fields, some replaced or dropped), or any value at all."""
    good = {"name": "mine", "pairs": [[f"a wedding {i}", f"an invoice {i}"] for i in range(8)], "min_pairs": 8,
            "scorer": {"name": "lexicon", "words": ["wedding"]}, "prefix": "About weddings:\n"}
    if draw(st.booleans()):
        return draw(values)
    doc = dict(good)
    for key in draw(st.lists(st.sampled_from(CONCEPT_KEYS), max_size=3)):
        if draw(st.booleans()):
            doc[key] = draw(values)
        else:
            doc.pop(key, None)
    return doc


def _yaml_text(doc, draw_alias: bool) -> str:
    import yaml

    text = yaml.safe_dump(doc, allow_unicode=True)
    return text + "x: &a [1, 2]\ny: *a\n" if draw_alias else text


@FAST
@given(doc=concept_docs(), fmt=st.sampled_from(["yaml", "json", "jsonl"]), alias=st.booleans(),
       junk=st.one_of(st.none(), st.binary(max_size=120), st.sampled_from(
           [b"[" * 5000, b"{\"name\": NaN}", b"name: a\nname: b\n", b"prompts: /etc/passwd\n"])))
@example(doc={"name": "mine", "pairs": [], "scorer": "vader", "prefix": "p", "prompts": "../x.txt"}, fmt="yaml",
         alias=False, junk=None)
def test_a_concept_file_loads_or_gives_a_clear_error(doc, fmt, alias, junk):
    """Whatever a concept file holds: a Concept whose fields have the documented types, or a ValueError that
    names the file. Never another error, and never a prompt read from outside the file's folder."""
    from sas.concepts import Concept, load_concept

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "secret.txt").write_text("root:x:0:0\n")
        path = Path(d) / "c" / f"concept.{fmt}"
        path.parent.mkdir()
        if junk is not None:
            path.write_bytes(junk)
        elif fmt == "yaml":
            path.write_text(_yaml_text(doc, alias))
        elif fmt == "json":
            path.write_text(json.dumps(doc))
        else:
            head = {k: v for k, v in doc.items() if k != "pairs"} if isinstance(doc, dict) else doc
            pairs = doc.get("pairs", []) if isinstance(doc, dict) and isinstance(doc.get("pairs"), list) else []
            path.write_text("\n".join(json.dumps(x) for x in [head, *pairs]))
        try:
            c = load_concept(path)
        except ValueError as e:
            assert "concept." in str(e), str(e)
            return
        assert isinstance(c, Concept) and len(c.pairs) >= c.min_pairs >= 8
        assert len(set(c.pairs)) == len(c.pairs) and all(t.strip() for p in c.pairs for t in p.texts)
        assert c.prompts == "neutral" or all(isinstance(x, str) and x.strip() and "root:x" not in x for x in c.prompts)
        assert all(isinstance(w, str) and w.strip() for w in c.concept_words)


dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
metas = st.one_of(st.none(), st.text(max_size=40), st.just("[" * 100_000), st.just('{"model": Infinity}'),
                  values.map(json.dumps), st.builds(lambda v: json.dumps({**v.meta(), "layers": "x"}), vectors()),
                  st.builds(lambda v: json.dumps(v.meta()), vectors()))


@FAST
@given(names_=st.lists(st.sampled_from(["layer.1", "layer.3", "layer.x", "direction.1", "w"]), min_size=0,
                       max_size=3, unique=True),
       shape=st.sampled_from([(4,), (2, 4), (0,), (3,), (1, 1, 4)]), dtype=dtypes, fill=st.sampled_from(
           [0.5, float("nan"), float("inf"), 1e38]), meta=metas)
def test_a_vector_file_loads_or_gives_a_clear_error(names_, shape, dtype, fill, meta):
    """Whatever a .safetensors vector file holds (tensor names, shapes, dtypes, values, metadata), loading it
    as a dense or sparse vector, or as either kind (what export and the server read), gives a vector of finite values or a ValueError naming the
    file. Never another error."""
    from safetensors.torch import save_file

    from sas.steering.kinds import load_vector
    from sas.steering.sparse import SparseVector

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.safetensors"
        tensors = {n: torch.full(shape, fill).to(dtype) for n in names_}
        save_file(tensors, str(path), metadata=None if meta is None else {"sas": meta})
        for load in (SteeringVector.load, SparseVector.load, load_vector):
            try:
                v = load(path)
            except ValueError as e:
                assert "v.safetensors" in str(e) or "sas metadata" in str(e), str(e)
                continue
            dirs = getattr(v, "directions", None) or getattr(v, "codes", {})
            assert dirs and all(torch.isfinite(t.float()).all() for t in dirs.values())


@FAST
@given(meta=st.one_of(st.none(), metas), width=st.sampled_from([4, 8]), fill=st.sampled_from([0.5, float("nan")]),
       layer=st.sampled_from([0, 1, 5]))
def test_a_gguf_control_vector_loads_or_gives_a_clear_error(meta, width, fill, layer):
    import gguf
    import numpy as np

    from sas.export.gguf import load_gguf

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.gguf"
        w = gguf.GGUFWriter(str(path), "controlvector")
        if meta is not None:
            w.add_uint32("sas.format", 1)
            w.add_string("sas.meta", meta)
        w.add_tensor(f"direction.{layer}", np.full(width, fill, dtype=np.float32))
        w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
        try:
            v = load_gguf(path)
        except ValueError as e:
            assert "v.gguf" in str(e), str(e)
            return
        assert all(torch.isfinite(t).all() for t in v.directions.values())
