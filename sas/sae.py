"""Sparse autoencoders: load them (sae-lens releases, local folders, Gemma Scope files, the project's own
registry in ``saes/``), check that they fit a model, measure their quality, and read features.

An SAE here is always a sae-lens ``SAE``; this module only finds, checks and measures them.

    sae = load_sae("gemma-3-270m-L9-4k", model)              # the project's own, by name
    sae = load_sae("gemma-scope-2-270m-pt-res/layer_9_width_16k_l0_small")  # sae-lens release/id (hub)
    sae = load_sae("path/to/layer_9/width_16k/average_l0_82")  # a folder: sae-lens, or Gemma Scope params
    metrics = evaluate_sae(model, sae, texts)
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from .models import sha256

SAE_DIR = Path(__file__).resolve().parents[1] / "saes"  # the registry: <name>.json cards + <name>/ folders
WEIGHTS = "sae_weights.safetensors"


# ----------------------------------------------------------------------------------------- loading
def load_sae(spec: str | Path | tuple[str, str], model=None, device: str = "cpu", dtype: str = "float32",
             strict: bool = True):
    """Return a sae-lens ``SAE`` for ``spec``, checked against ``model`` if given.

    ``spec`` is one of:
    - a name from the registry in ``saes/`` (``registry()`` lists them), e.g. ``"gemma-3-270m-L9-4k"``;
      the weights' sha256 is checked against the card;
    - a folder: sae-lens (``cfg.json`` + ``sae_weights.safetensors``), Gemma Scope (``params.npz``) or
      Gemma Scope 2 (``params.safetensors``);
    - a sae-lens release and id, as a tuple or ``"release/id"`` (needs the Hugging Face hub).

    With ``model``, the SAE's input width must equal the model's width, its hook must exist in the model,
    and its model name must match: a mismatch raises ``ValueError`` (``strict=False``: a warning).
    """
    if isinstance(spec, tuple):
        sae = _load_release(*spec, device=device, dtype=dtype)
    elif Path(spec).is_dir():
        sae = _load_folder(Path(spec), device, dtype)
    elif str(spec) in registry():
        sae = _load_registered(str(spec), device, dtype)
    elif "/" in str(spec) and not Path(spec).exists():
        release, _, sae_id = str(spec).partition("/")
        sae = _load_release(release, sae_id, device=device, dtype=dtype)
    else:
        raise ValueError(f"unknown SAE {spec!r}: not a folder, not in the registry ({sorted(registry())}), and "
                         "not a sae-lens 'release/id'")
    if model is not None:
        check_sae_fits(sae, model, strict=strict)
    sae.sas_name = "/".join(spec) if isinstance(spec, tuple) else str(spec)  # carried into SAS vectors' metadata
    sae.sas_release = spec[0] if isinstance(spec, tuple) else str(spec).partition("/")[0]  # for Neuronpedia links
    return sae


def registry() -> dict[str, dict]:
    """The project's own SAEs: ``{name: card}`` from the ``saes/*.json`` cards."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(SAE_DIR.glob("*.json"))}


def _load_registered(name: str, device: str, dtype: str):
    card = registry()[name]
    folder = SAE_DIR / card.get("folder", name)
    weights = folder / WEIGHTS
    fix = (f"restore it with `git checkout -- saes/{folder.name}` (or `git lfs pull`), or retrain it with the "
           f"command in saes/{name}.json ('training.command')")
    if not weights.exists():
        raise FileNotFoundError(f"the weights of SAE {name!r} are missing ({weights}); {fix}")
    if sha256(weights) != card["sha256"]:
        raise ValueError(f"the weights of SAE {name!r} ({weights}) do not match the sha256 in its card: "
                         f"corrupted or replaced; {fix}")
    return _load_folder(folder, device, dtype)


def _load_folder(folder: Path, device: str, dtype: str):
    from sae_lens import SAE

    if (folder / "cfg.json").exists() and (folder / WEIGHTS).exists():
        return SAE.load_from_disk(folder, device=device, dtype=dtype)
    if (folder / "params.npz").exists() or (folder / "params.safetensors").exists():
        return SAE.load_from_disk(folder, device=device, dtype=dtype, converter=gemma_scope_converter)
    raise FileNotFoundError(f"{folder} holds no SAE: expected cfg.json + {WEIGHTS} (sae-lens), params.npz "
                            "(Gemma Scope) or params.safetensors (Gemma Scope 2)")


def gemma_scope_converter(path: str | Path, device: str = "cpu", cfg_overrides: dict | None = None):
    """A ``SAE.load_from_disk`` converter for a local Gemma Scope folder.

    Reads ``params.npz`` (Gemma Scope) or ``params.safetensors`` (Gemma Scope 2), both with ``w_enc [d_in, d_sae],
    w_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], threshold [d_sae]``. The hook comes from ``cfg_overrides``
    (``hook_name``), else from a ``layer_N`` part of the path (``blocks.N.hook_resid_post``); the model name from
    ``cfg_overrides`` (``model_name``) or a ``config.json`` beside the weights. Returns ``(cfg_dict, state_dict)``.
    """
    path = Path(path)
    overrides = dict(cfg_overrides or {})
    if (path / "params.npz").exists():
        import numpy as np

        with np.load(path / "params.npz") as data:
            raw = {k: torch.from_numpy(data[k]) for k in data.files}
    elif (path / "params.safetensors").exists():
        from safetensors.torch import load_file

        raw = load_file(path / "params.safetensors")
    else:
        raise FileNotFoundError(f"no params.npz or params.safetensors in {path}")
    missing = {"w_enc", "w_dec", "b_enc", "b_dec", "threshold"} - set(raw)
    if missing:
        raise ValueError(f"{path} is not a Gemma Scope SAE: its params lack {sorted(missing)}")
    extra = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    hook = overrides.pop("hook_name", None)
    if hook is None:
        layer = re.search(r"layer_(\d+)", str(path.resolve()))
        if layer is None:
            raise ValueError(f"cannot tell the hook of {path}: no 'layer_N' in the path; pass "
                             "cfg_overrides={'hook_name': 'blocks.N.hook_resid_post'}")
        hook = f"blocks.{layer.group(1)}.hook_resid_post"
    d_in, d_sae = raw["w_enc"].shape
    dtype = overrides.pop("dtype", None) or "float32"
    cfg = {
        "architecture": "jumprelu", "d_in": d_in, "d_sae": d_sae, "dtype": dtype, "device": device,
        "model_name": overrides.pop("model_name", extra.get("model_name", "unknown")), "hook_name": hook,
        "apply_b_dec_to_input": False, "normalize_activations": "none", **overrides,
    }
    tdtype = getattr(torch, dtype)
    state = {"W_enc": raw["w_enc"], "W_dec": raw["w_dec"], "b_enc": raw["b_enc"], "b_dec": raw["b_dec"],
             "threshold": raw["threshold"]}
    return cfg, {k: v.to(device=device, dtype=tdtype) for k, v in state.items()}


def _load_release(release: str, sae_id: str, device: str, dtype: str):
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, list(directory), n=5, cutoff=0.5)
        raise ValueError(f"unknown sae-lens release {release!r}; close ones: {close}. "
                         "All: sae_lens.loading.pretrained_saes_directory.get_pretrained_saes_directory()")
    ids = directory[release].saes_map
    if sae_id not in ids:
        close = difflib.get_close_matches(sae_id, list(ids), n=5, cutoff=0.5)
        raise ValueError(f"unknown id {sae_id!r} in release {release!r}; close ones: {close or list(ids)[:5]}")
    try:
        return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
    except Exception as e:  # hub errors come as OSError, ConnectionError, requests/httpx errors, ...
        if _looks_offline(e):
            raise OSError(f"could not download SAE {release}/{sae_id} from the Hugging Face hub "
                          f"({directory[release].repo_id}): the hub is unreachable from here. Offline, use one "
                          f"of the project's own SAEs: {sorted(registry())}, or a local folder.") from e
        raise


def _looks_offline(e: BaseException) -> bool:
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    text = str(e).lower()
    return bool(names & {"LocalEntryNotFoundError", "ConnectionError", "ConnectError", "OfflineModeIsEnabled",
                         "MaxRetryError", "NameResolutionError", "Timeout", "ConnectTimeout"}) \
        or any(s in text for s in ("offline", "connection", "resolve", "unreachable", "network"))


def check_sae_fits(sae, model, strict: bool = True) -> None:
    """Raise ``ValueError`` (or warn, ``strict=False``) if ``sae`` was not made for ``model`` at its hook."""
    hook = sae.cfg.metadata.hook_name
    problems = []
    if hook not in model.hook_dict:
        problems.append(f"the SAE reads hook {hook!r}, which {model.cfg.model_name} does not have")
    if re.search(r"hook_(resid_pre|resid_mid|resid_post|mlp_out|attn_out)$", hook or "") and \
            sae.cfg.d_in != model.cfg.d_model:
        problems.append(f"the SAE's input width {sae.cfg.d_in} differs from {model.cfg.model_name}'s d_model "
                        f"{model.cfg.d_model}")
    if _short(sae.cfg.metadata.model_name) not in ("unknown", "none", _short(model.cfg.model_name)):
        problems.append(f"the SAE was trained on {sae.cfg.metadata.model_name!r}, not {model.cfg.model_name!r}")
    if problems:
        msg = "; ".join(problems) + ". Load an SAE made for this model and layer (sas.sae.registry() lists ours)."
        if strict:
            raise ValueError(msg)
        warnings.warn(msg)


def _short(name) -> str:
    return str(name).lower().split("/")[-1]


# ---------------------------------------------------------------------------------- activations
def token_chunks(tokenizer, texts: Iterable[str], context: int = 128, max_tokens: int | None = None) -> torch.Tensor:
    """Concatenate ``texts`` (each followed by EOS) and cut into rows of BOS + ``context - 1`` tokens: ``[n, context]``."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    rows, cur, total = [], [], 0
    for text in texts:
        cur += tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        while len(cur) >= context - 1:
            rows.append([bos] + cur[:context - 1])
            cur = cur[context - 1:]
            total += context - 1
        if max_tokens is not None and total >= max_tokens:
            break
    if not rows:
        raise ValueError(f"fewer than {context} tokens of text given; pass more text or a smaller context")
    return torch.tensor(rows)


@torch.no_grad()
def hook_activations(model, tokens: torch.Tensor, hook: str, batch_size: int = 16,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Residual activations at ``hook`` for ``tokens [n, pos]``, running the model only up to that layer.

    Returns ``[n_kept, d_model]`` float32: positions where ``mask [n, pos]`` is True (default: all but position 0
    and special tokens, so BOS, whose residual is an outlier, never counts).
    """
    if mask is None:
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        for sid in model.tokenizer.all_special_ids:
            mask &= tokens != sid
    layer = int(hook.split(".")[1]) if hook.startswith("blocks.") else 0
    out = []
    for i in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(tokens[i:i + batch_size], stop_at_layer=layer + 1,
                                        names_filter=lambda n: n == hook)
        out.append(cache[hook][mask[i:i + batch_size]].float())
    return torch.cat(out)


# ------------------------------------------------------------------------------------- features
@torch.no_grad()
def encode(sae, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Sparse codes of activations ``[n, d_in]`` in batches: ``[n, d_sae]`` (dense; n * d_sae * 4 bytes)."""
    return torch.cat([sae.encode(acts[i:i + batch_size].to(sae.dtype)) for i in range(0, len(acts), batch_size)])


@torch.no_grad()
def feature_frequency(sae, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Fraction of the rows of ``acts [n, d_in]`` on which each feature is active: ``[d_sae]``."""
    counts = torch.zeros(sae.cfg.d_sae)
    for i in range(0, len(acts), batch_size):
        counts += (sae.encode(acts[i:i + batch_size].to(sae.dtype)) > 0).sum(0).float()
    return counts / max(len(acts), 1)


@torch.no_grad()
def firing_counts(model, saes: dict[str, object], tokens: torch.Tensor,
                  batch_size: int = 16, progress: bool = False) -> tuple[dict[str, torch.Tensor], int]:
    """How many token positions each feature of each SAE fires on, over ``tokens [n, pos]`` (BOS and other
    special tokens left out), in one streamed pass of the model up to the deepest hook of ``saes``
    ({name: SAE}). Memory stays at one batch, so dead features can be counted over a million tokens.
    Returns ({name: counts [d_sae]}, number of positions counted)."""
    from tqdm.auto import tqdm

    hooks = {n: sae.cfg.metadata.hook_name for n, sae in saes.items()}
    last = max(int(h.split(".")[1]) for h in hooks.values())
    counts = {n: torch.zeros(sae.cfg.d_sae, dtype=torch.long) for n, sae in saes.items()}
    n_pos = 0
    for i in tqdm(range(0, len(tokens), batch_size), desc="firing counts", disable=not progress, mininterval=10):
        batch = tokens[i:i + batch_size]
        mask = torch.ones_like(batch, dtype=torch.bool)
        mask[:, 0] = False
        for sid in model.tokenizer.all_special_ids:
            mask &= batch != sid
        _, cache = model.run_with_cache(batch, stop_at_layer=last + 1, names_filter=lambda n: n in hooks.values())
        for n, sae in saes.items():
            counts[n] += (sae.encode(cache[hooks[n]][mask].to(sae.dtype)) > 0).sum(0)
        n_pos += int(mask.sum())
    return counts, n_pos


def decoder_direction(sae, feature: int) -> torch.Tensor:
    """The decoder row of ``feature``: ``[d_in]``, the direction the feature writes into the residual stream."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise IndexError(f"feature {feature} out of range: this SAE has {sae.cfg.d_sae} features")
    return sae.W_dec[feature].detach()


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class SAEMetrics:
    """Quality of an SAE on some text. ``ce_loss_recovered = (zero - spliced) / (zero - clean)``."""

    n_tokens: int
    explained_variance: float
    mean_l0: float
    dead_fraction: float
    n_ce_tokens: int = 0
    ce_loss_clean: float = float("nan")
    ce_loss_spliced: float = float("nan")
    ce_loss_zero: float = float("nan")
    ce_loss_recovered: float = float("nan")
    explained_variance_ab: float = float("nan")  # at the answer-letter token of A/B prompts
    explained_variance_sentiment: float = float("nan")  # on all tokens of sentiment prompts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def reconstruction_metrics(sae, acts: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Explained variance (around the mean of ``acts [n, d_in]``), mean L0 and the fraction of features never
    active on these rows."""
    sse, fired, l0 = 0.0, torch.zeros(sae.cfg.d_sae, dtype=torch.bool), 0.0
    mean = acts.mean(0)
    for i in range(0, len(acts), batch_size):
        x = acts[i:i + batch_size].to(sae.dtype)
        f = sae.encode(x)
        sse += (sae.decode(f) - x).pow(2).sum().item()
        fired |= (f > 0).any(0)
        l0 += (f > 0).sum().item()
    sst = (acts - mean).pow(2).sum().item()
    return {"n_tokens": len(acts), "explained_variance": 1 - sse / sst, "mean_l0": l0 / len(acts),
            "dead_fraction": 1 - fired.float().mean().item()}


@torch.no_grad()
def ce_losses(model, sae, tokens: torch.Tensor, batch_size: int = 4,
              which: tuple[str, ...] = ("clean", "spliced", "zero")) -> dict[str, float]:
    """Mean next-token loss on ``tokens [n, pos]``: ``clean``, with the SAE's reconstruction ``spliced`` in at its
    hook, and with that activation ``zero``-ablated; both edits at every position but the first (BOS)."""
    hook = sae.cfg.metadata.hook_name if sae is not None else None

    def splice(act, hook):
        act[:, 1:] = sae(act[:, 1:].to(sae.dtype)).to(act.dtype)
        return act

    def zero(act, hook):
        act[:, 1:] = 0
        return act

    out = {}
    for name, fn in (("clean", None), ("spliced", splice), ("zero", zero)):
        if name not in which:
            continue
        total = 0.0
        for i in range(0, len(tokens), batch_size):
            batch = tokens[i:i + batch_size]
            logits = model.run_with_hooks(batch, return_type="logits", fwd_hooks=[(hook, fn)] if fn else [])
            # the loss in float32 even for a bfloat16 model, whose own loss is rounded to 3 significant digits
            total += torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(),
                                                       reduction="sum").item()
        out[name] = total / (tokens.shape[0] * (tokens.shape[1] - 1))
    return out


def evaluate_sae(model, sae, texts: Iterable[str], n_tokens: int = 100_000, n_ce_tokens: int = 8192,
                 context: int = 128, batch_size: int = 16, ab_prompts: list[str] | None = None,
                 sentiment_prompts: list[str] | None = None) -> SAEMetrics:
    """Measure ``sae`` on ``texts``: explained variance, mean L0 and dead fraction on ``n_tokens`` non-BOS tokens,
    and the cross-entropy loss recovered (clean vs spliced vs zero-ablated) on the first ``n_ce_tokens``.
    With ``ab_prompts`` (ending in the answer letter) and ``sentiment_prompts``, also the explained variance at
    the answer-letter token and on the sentiment prompts' tokens."""
    tokens = token_chunks(model.tokenizer, texts, context, max_tokens=n_tokens)
    acts = hook_activations(model, tokens, sae.cfg.metadata.hook_name, batch_size)
    m = SAEMetrics(**reconstruction_metrics(sae, acts))
    if n_ce_tokens:
        ce_rows = tokens[:max(1, n_ce_tokens // (context - 1))]
        ce = ce_losses(model, sae, ce_rows)
        m.n_ce_tokens = ce_rows.numel() - len(ce_rows)
        m.ce_loss_clean, m.ce_loss_spliced, m.ce_loss_zero = ce["clean"], ce["spliced"], ce["zero"]
        m.ce_loss_recovered = (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"])
    if ab_prompts:
        m.explained_variance_ab = explained_variance_at(model, sae, ab_prompts, True)["explained_variance"]
    if sentiment_prompts:
        m.explained_variance_sentiment = explained_variance_at(model, sae, sentiment_prompts, False)["explained_variance"]
    return m


@torch.no_grad()
def prompt_activations(model, prompts: list[str], hook: str, last_token_only: bool = True,
                       batch_size: int = 16) -> torch.Tensor:
    """Activations at ``hook`` that steering reads: the last token of each prompt (e.g. the answer letter of a
    CAA A/B prompt ending in ``"Answer: (A"``) or, ``last_token_only=False``, every non-BOS token.
    Returns ``[n_rows, d_model]`` float32."""
    tok = model.tokenizer
    rows = []
    for i in range(0, len(prompts), batch_size):
        enc = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts[i:i + batch_size]]
        width = max(map(len, enc))
        tokens = torch.zeros(len(enc), width, dtype=torch.long)
        mask = torch.zeros(len(enc), width, dtype=torch.bool)
        for j, ids in enumerate(enc):  # right padding: causal attention leaves the real tokens unchanged
            tokens[j, :len(ids)] = torch.tensor(ids)
            if last_token_only:
                mask[j, len(ids) - 1] = True
            else:
                mask[j, 1:len(ids)] = True
        rows.append(hook_activations(model, tokens, hook, batch_size, mask=mask))
    return torch.cat(rows)


def explained_variance_at(model, sae, prompts: list[str], last_token_only: bool = True) -> dict[str, float]:
    """``reconstruction_metrics`` of ``sae`` on ``prompt_activations`` (explained variance around those rows' mean)."""
    return reconstruction_metrics(sae, prompt_activations(model, prompts, sae.cfg.metadata.hook_name, last_token_only))
