import pytest
import torch

REAL_MODEL_FIXTURES = {"gemma", "gemma_bf16"}


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(items):
    """A test that takes the real gemma-3-270m fixture is slow, marked or not: the fast lane never loads it."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tests_load_no_real_model(request, monkeypatch):
    """Outside tests marked slow, loading a real model's weights is an error that names the fix, so the fast lane
    (`pytest -m "not slow"`) stays fast."""
    if request.node.get_closest_marker("slow"):
        return
    import sas.load.models

    def refuse(name="gemma-3-270m", *args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} loads the real model {name!r}: mark it @pytest.mark.slow "
                           "(or use the `tiny` fixture)")

    monkeypatch.setattr(sas.load.models, "load_hf", refuse)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test gets torch's thread count back as it found it: several tests (and the CLI's ``--threads``) set
    it to 1, which otherwise slowed every later test in the session to one core."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def gemma():
    """The real gemma-3-270m as a HookedTransformer, loaded once per test session (slow tests only)."""
    from sas.load.models import load_model

    return load_model("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The gemma-3-270m tokenizer (262,144 tokens; BOS 2, pad 0, EOS 1), from the conversion cache."""
    from transformers import AutoTokenizer

    from sas.load.models import converted_model_dir

    return AutoTokenizer.from_pretrained(converted_model_dir("gemma-3-270m"))


@pytest.fixture(scope="session")
def tiny(gemma_tokenizer):
    """A tiny random Gemma-like HookedTransformer (3 layers, d_model 32, rotary, RMSNorm, gelu) with the real
    gemma tokenizer, so prompt formatting, padding and generation run their real code paths in seconds.
    The full 262k vocabulary costs 67 MB of embeddings, which is cheap at d_model 32."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=256, d_vocab=len(gemma_tokenizer),
        act_fn="gelu", attn_only=False, normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=8, seed=0, device="cpu", dtype=torch.float32)
    model = HookedTransformer(cfg, tokenizer=gemma_tokenizer)
    model.cfg.model_name = "tiny"
    model.eval()
    return model


def hooks_left(model) -> dict[str, int]:
    """Hook points that still carry forward or backward hooks (should be none outside a steer block)."""
    return {name: len(hp.fwd_hooks) + len(hp.bwd_hooks) for name, hp in model.hook_dict.items()
            if hp.fwd_hooks or hp.bwd_hooks}


@pytest.fixture(scope="session")
def gemma_bf16():
    """gemma-3-270m in bfloat16 (about twice as fast on this CPU), loaded once per test session, for real-model
    tests whose assertion holds in bfloat16 (tests/test_dtype_device.py checks it against float32)."""
    from sas.load.models import load_model

    return load_model("gemma-3-270m", dtype="bfloat16")


@pytest.fixture(scope="session")
def gemma_fast(request):
    """gemma-3-270m in the faster dtype on this CPU, for real-model tests whose assertion holds in either: bfloat16
    where the CPU has bfloat16 instructions (about twice as fast as float32), else the float32 ``gemma`` (an AVX2
    CPU emulates bfloat16, 3.4x slower than float32)."""
    from sas.load.device import native_bfloat16

    return request.getfixturevalue("gemma_bf16" if native_bfloat16() else "gemma")
