"""Feature dashboards: the per-SAE cache checked against the project's own activation code (tiny model), the
bad inputs, and the real pages (gemma-3-270m, the shipped 4k SAE, a sentiment SAS vector) rendered in headless
Chromium (Debian's ``chromium``; CI installs it with ``apt-get install -y chromium``)."""

import json
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser

import pytest
import torch
from test_sparse import LAYER, random_sae

from sas.activations.codes import encode, firing_counts
from sas.activations.residual import hook_activations
from sas.load.data import load_text_sample
from sas.activations.feature_cache import feature_cache
from sas.reports.dashboard import build_dashboard
from sas.steering.sparse import SparseVector


def _vector(sae, model, features=(3, 7, 50), values=(1.0, -2.0, 0.5), name="random"):
    code = torch.zeros(sae.cfg.d_sae)
    code[list(features)] = torch.tensor(values)
    return SparseVector({LAYER: code}, {LAYER: sae}, model.cfg.model_name, sae_names={LAYER: name})


@pytest.fixture(scope="module")
def texts():
    return load_text_sample(4)


def test_cache_agrees_with_the_activation_code(tiny, texts, tmp_path):
    sae = random_sae()
    fc = feature_cache(tiny, sae, texts, max_tokens=500, cache_dir=tmp_path, k=8, left=5, right=2)
    counts, n = firing_counts(tiny, {"s": sae}, fc.tokens.long())
    assert fc.n_positions == n > 400
    assert torch.equal(fc.counts, counts["s"])
    z = encode(sae, hook_activations(tiny, fc.tokens.long(), sae.cfg.metadata.hook_name))  # [n, d_sae]
    top = z.topk(8, dim=0).values.T  # the 8 highest activations of each feature
    assert torch.allclose(fc.top_acts, top, atol=1e-5)
    assert torch.allclose(fc.act_sum.float(), z.sum(0), rtol=1e-4, atol=1e-3)
    assert torch.equal(fc.hist.sum(1).long(), counts["s"])  # every firing lands in one histogram bin
    f = int(counts["s"].argmax())
    ctx = fc.contexts(f, 3)
    assert ctx and ctx[0]["activation"] == pytest.approx(top[f, 0].item(), abs=1e-5)
    assert ctx[0]["acts"][ctx[0]["center"]] == pytest.approx(ctx[0]["activation"], rel=1e-2)  # stored as float16
    # read back, not rebuilt
    again = feature_cache(tiny, sae, texts, max_tokens=500, cache_dir=tmp_path, k=8, left=5, right=2)
    assert again.meta["written"] == fc.meta["written"] and torch.equal(again.top_acts, fc.top_acts)


def test_cache_from_other_weights_is_rebuilt(tiny, texts, tmp_path):
    sae = random_sae()
    fc = feature_cache(tiny, sae, texts, max_tokens=300, cache_dir=tmp_path)
    with torch.no_grad():
        sae.W_enc[:, 0] += 1.0  # retrained in place: same name, same settings, other weights
    with pytest.warns(UserWarning, match="other SAE weights"):
        fc2 = feature_cache(tiny, sae, texts, max_tokens=300, cache_dir=tmp_path)
    assert fc2.meta["sae_sha256"] != fc.meta["sae_sha256"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 1  # replaced, not kept beside
    # a truncated file is rebuilt too
    path = next(tmp_path.glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        feature_cache(tiny, sae, texts, max_tokens=300, cache_dir=tmp_path)


@pytest.mark.parametrize("name, edit, problem", [
    ("top_rows", lambda t: t.index_fill(0, torch.tensor([3]), 10**6), r"top_rows with values outside \[0, \d+\]"),
    ("counts", lambda t: t.index_fill(0, torch.tensor([3]), -5), "counts with values outside"),
    ("tokens", lambda t: t.index_fill(1, torch.tensor([4]), 10**9), "tokens with values outside"),
    ("hist", lambda t: t[:, :-1], r"hist of shape \[128, 239\], not \[128, 240\]"),
    ("top_acts", lambda t: t.index_fill(0, torch.tensor([1]), float("nan")), "top_acts with values outside")])
def test_a_cache_with_impossible_tensors_is_rebuilt(tiny, texts, tmp_path, name, edit, problem):
    from dataclasses import replace

    sae = random_sae()
    fc = feature_cache(tiny, sae, texts, max_tokens=300, cache_dir=tmp_path, k=8)
    path = next(tmp_path.glob("*.safetensors"))
    replace(fc, **{name: edit(getattr(fc, name))}).save(path)  # same SAE hash and settings, tampered tensors
    with pytest.warns(UserWarning, match=f"holds {problem}.*rebuilding it"):
        again = feature_cache(tiny, sae, texts, max_tokens=300, cache_dir=tmp_path, k=8)
    assert all(torch.equal(getattr(again, k), getattr(fc, k), ) for k in ("top_rows", "counts", "tokens", "hist"))


def test_pages_on_tiny_and_bad_input(tiny, texts, tmp_path):
    sae = random_sae()
    v = _vector(sae, tiny)
    out = tmp_path / "dash"
    pos, neg = ["I love this film.", "What a fine day."], ["I hate this film.", "What an awful day."]
    index = build_dashboard(tiny, sae, v, out, contrast=(pos, neg), max_tokens=300,
                            cache_dir=tmp_path / "cache")
    html = index.read_text()
    assert [int(x) for x in _attr_values(html, "tr", "data-feature")] == [7, 3, 50]  # by |weight|
    assert sorted(p.name for p in out.iterdir()) == ["feature_3.html", "feature_50.html", "feature_7.html",
                                                     "index.html", "sas_dashboard.json"]
    # a dashboard folder is replaced, stale pages go; a folder with other files is refused
    build_dashboard(tiny, sae, [3, 9], out, max_tokens=300, cache_dir=tmp_path / "cache")
    assert sorted(json.loads((out / "sas_dashboard.json").read_text())["files"]) == \
        ["feature_3.html", "feature_9.html", "index.html"]
    assert not (out / "feature_50.html").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not part of a sas dashboard.*notes.txt"):
        build_dashboard(tiny, sae, [3], out, max_tokens=300, cache_dir=tmp_path / "cache")
    assert (out / "notes.txt").read_text() == "mine"
    # a hub SAE that Neuronpedia hosts links each feature to its page there
    sae.sas_release = "gemma-scope-2b-pt-res-canonical"
    build_dashboard(tiny, sae, [3], tmp_path / "np", max_tokens=300, cache_dir=tmp_path / "cache")
    url = f"https://www.neuronpedia.org/gemma-2-2b/{LAYER}-gemmascope-res-16k/3"
    assert url in (tmp_path / "np" / "index.html").read_text() and url in (tmp_path / "np" / "feature_3.html").read_text()
    with pytest.raises(IndexError, match="out of range: this SAE has 128 features"):
        build_dashboard(tiny, sae, [3, 128], tmp_path / "d2", max_tokens=300, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="lives in SAE 'random'"):
        other = random_sae(d_sae=64, seed=1)
        other.sas_name = "other"
        build_dashboard(tiny, other, v, tmp_path / "d3", max_tokens=300, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()
    # a saved vector whose SAE cannot be found: a clear error when it is loaded
    path = _vector(sae, tiny, name="no-such-sae").save(tmp_path / "v")
    with pytest.raises(ValueError, match="names SAE 'no-such-sae' for layer 1, which is not in the registry"):
        SparseVector.load(path)


# ------------------------------------------------------------------------------- real pages, real browser
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium(tmp_path, *args) -> str:
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class _Elements(HTMLParser):
    """Every element of a rendered DOM as (tag, attributes)."""

    def __init__(self, html):
        super().__init__()
        self.elements = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def having(self, tag, cls=None):
        return [a for t, a in self.elements if t == tag and (cls is None or cls in a.get("class", "").split())]


def _attr_values(html, tag, attr):
    return [a[attr] for a in _Elements(html).having(tag) if attr in a]


@pytest.mark.slow
def test_dashboard_of_a_sas_vector_in_chromium(gemma, tmp_path):
    from PIL import Image

    from sas.concepts.tasks import sentiment_pairs
    from sas.load.saes import load_sae
    from sas.methods.sas import sas_vector_from_texts

    torch.set_num_threads(1)
    sae = load_sae("gemma-3-270m-L9-4k", gemma)
    pos, neg = sentiment_pairs()
    sv = sas_vector_from_texts(gemma, sae, pos, neg, tau=0.1)
    n = sv.n_features()[9]
    start = time.perf_counter()
    index = build_dashboard(gemma, sae, sv, tmp_path / "dash", contrast=(pos, neg), max_tokens=3000,
                            cache_dir=tmp_path / "cache")
    seconds = time.perf_counter() - start
    print(f"{n} feature pages with a 3000-token cache in {seconds:.1f} s")
    for page in (tmp_path / "dash").glob("*.html"):  # offline: nothing to fetch
        src = page.read_text()
        assert "<script" not in src and "<link" not in src and "url(" not in src and "@import" not in src

    dom = _Elements(_chromium(tmp_path, "--dump-dom", index.as_uri()))
    rows = dom.having("tr", "feature-row")
    assert len(rows) == n and [int(r["data-feature"]) for r in rows] == sv.features(9).tolist()
    links = dom.having("a", "feature-link")
    assert len(links) == n and all((tmp_path / "dash" / a["href"]).is_file() for a in links)

    first = tmp_path / "dash" / links[0]["href"]
    page = _Elements(_chromium(tmp_path, "--dump-dom", first.as_uri()))
    assert int(page.having("h1")[0]["data-feature"]) == int(rows[0]["data-feature"])
    lit = page.having("span", "act")
    assert lit and all(float(s["title"].split(" ")[0]) > 0 for s in lit)  # title: "activation · 'token'"
    assert len(page.having("span", "max")) >= 1 and page.having("svg", "hist") and page.having("rect")
    assert all((first.parent / a["href"]).is_file() for a in page.having("a") if not a["href"].startswith("http"))

    shot = tmp_path / "feature.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1100", "--hide-scrollbars", first.as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1100)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # rendered, not a blank page
    orange = sum(c for c, (r, g, b) in colors if r > 200 and 80 < g < 200 and b < 120)
    assert orange > 500  # the highlighted tokens and the histogram's bars are drawn
