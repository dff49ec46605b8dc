"""sas against the peer libraries (issue 5): its CAA vector equals the one steering-vectors computes, and the
benchmark command's quick mode (sas, steering-vectors and repeng in their environments) runs end to end.

steering-vectors 0.12.2 asks for transformers<5; it runs unchanged on ours and is installed with
``pip install --no-deps steering-vectors==0.12.2 scikit-learn`` (``.ci/run`` does). Without it the test is
skipped. It reads the same token as sas's CAA (the answer letter, the last token of the prompt
``<question>\\n\\nAnswer: (<letter>``) on the Hugging Face copy of the same weights, with its mean-difference
aggregator, at every layer, on 100 pairs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_caa_vector_equals_steering_vectors(gemma):
    sv = pytest.importorskip("steering_vectors", reason="steering-vectors is not installed: "
                             "pip install --no-deps steering-vectors==0.12.2 scikit-learn")
    from sas import caa_vector, load_behavior
    from sas.load.data import balance_letters
    from sas.load.models import load_hf
    from sas.load.prompts import BASE_SUFFIX, ab_tokens

    layers = list(range(gemma.cfg.n_layers))
    pairs = load_behavior("sycophancy")[:100]
    ours = caa_vector(gemma, pairs, layers, "sycophancy", progress=False)  # letter-balanced

    hf, tok = load_hf("gemma-3-270m")
    used = balance_letters(pairs)  # the same pairs caa_vector used
    samples = [(p.question + BASE_SUFFIX + p.matching, p.question + BASE_SUFFIX + p.not_matching) for p in used]
    # the prompt as a string tokenizes to exactly the ids sas builds (BOS, question, scaffold, letter)
    t = ab_tokens(gemma, used)
    for pre, p, (pos, neg) in zip(t.prefix, used, samples):
        assert tok(pos).input_ids == pre + t.suffix + [t.letters[p.matching]]
        assert tok(neg).input_ids == pre + t.suffix + [t.letters[p.not_matching]]
    # the decoder without its 262k-vocabulary unembedding (same activations, 3x faster); batches of similar
    # length (less padding): the mean does not depend on the order
    samples.sort(key=lambda s: len(s[0]))
    theirs = sv.train_steering_vector(hf.model, tok, samples, layers=layers, batch_size=16, read_token_index=-1,
                                      aggregator=sv.mean_aggregator())
    del hf
    assert sorted(theirs.layer_activations) == layers
    for x in layers:
        a, b = ours.directions[x], theirs.layer_activations[x].float()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        ratio = a.norm().item() / b.norm().item()
        assert cos >= 0.999, f"layer {x}: cosine {cos:.6f}"
        assert abs(ratio - 1) <= 0.005, f"layer {x}: norm ratio {ratio:.6f}"


@pytest.mark.slow
def test_benchmarks_quick_mode(tmp_path):
    """``python -m benchmarks.run --quick`` runs every benchmark, the peers included (it makes repeng's virtual
    environment under benchmarks/.venvs the first time), and its correctness checks pass. 9 minutes at load 6-7."""
    out = tmp_path / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --no-memory: the peak-memory children would load the model twice more (issue 14: CI time)
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick", "--no-memory", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    names = {b["name"] for b in res["benchmarks"]}
    assert {"extraction_peers", "ab_scoring_hf", "generation_batch1", "generation_batch8", "sparse_forward",
            "bf16"} <= names
    checks = {b["name"]: b["check"] for b in res["benchmarks"]}
    assert all(c.get("ok", True) for c in checks.values()), checks
    for batch in ("generation_batch1", "generation_batch8"):
        c = checks[batch]  # the peers steer as sas does: the same greedy text
        assert c["dense_sas_equals_steering_vectors_rows"] == c["dense_sas_equals_repeng_rows"] == c["rows"], c
    assert set(res["environment"]["peers"]) >= {"steering-vectors", "repeng"}
    assert (out.with_suffix(".md")).read_text().count("steering-vectors") > 2
