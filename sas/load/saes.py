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
from pathlib import Path

import torch

from ..hooks import layer_of, resid_hook
from ..hashing import sha256, tensor_hash  # noqa: F401  (tensor_hash: re-exported, its old home)

def _sae_dir() -> Path:
    """The registry folder: ``saes/`` of a checkout (editable install), or its copy ``sas/_saes`` in an installed package."""
    checkout = Path(__file__).resolve().parents[2] / "saes"
    return checkout if checkout.is_dir() else Path(__file__).resolve().parents[1] / "_saes"


SAE_DIR = _sae_dir()  # the registry: <name>.json cards + <name>/ folders
WEIGHTS = "sae_weights.safetensors"


# ----------------------------------------------------------------------------------------- loading
def load_sae(spec: str | Path | tuple[str, str], model=None, device: str | None = None, dtype: str | None = None,
             strict: bool = True):
    """Return a sae-lens ``SAE`` for ``spec``, checked against ``model`` if given.

    ``spec`` is one of:
    - a name from the registry in ``saes/`` (``registry()`` lists them), e.g. ``"gemma-3-270m-L9-4k"``;
      the weights' sha256 is checked against the card;
    - a folder: sae-lens (``cfg.json`` + ``sae_weights.safetensors``), Gemma Scope (``params.npz``) or
      Gemma Scope 2 (``params.safetensors``);
    - a sae-lens release and id, as a tuple or ``"release/id"`` (needs the Hugging Face hub).

    ``device`` and ``dtype`` default to the model's (the device of the block the SAE reads, for a model split
    over GPUs), or without a model to ``"auto"`` (CUDA when there is a GPU) and ``float32``.
    With ``model``, the SAE's input width must equal the model's width, its hook must exist in the model,
    and its model name must match: a mismatch raises ``ValueError`` (``strict=False``: a warning).
    """
    from .device import DTYPES, block_device, resolve_device, resolve_dtype

    if device is None:
        device = str(block_device(model)) if model is not None else "auto"
    device = resolve_device(device)
    if dtype is None:
        dtype = model.cfg.dtype if model is not None else "float32"
    tdtype = resolve_dtype(dtype, device)
    dtype = next(k for k, v in DTYPES.items() if v == tdtype)  # sae-lens takes the dtype's name
    where = "/".join(spec) if isinstance(spec, tuple) else str(spec)
    if isinstance(spec, tuple):
        sae = _load_release(*spec, device=device, dtype=dtype)
    elif Path(spec).is_dir():
        sae = _load_folder(Path(spec), device, dtype)
        where = next((str(Path(spec) / f) for f in (WEIGHTS, "params.npz", "params.safetensors")
                      if (Path(spec) / f).exists()), where)
    elif str(spec) in registry():
        sae = _load_registered(str(spec), device, dtype)
        where = str(SAE_DIR / registry()[str(spec)].get("folder", str(spec)) / WEIGHTS)
    elif _looks_like_path(str(spec)):
        raise FileNotFoundError(f"no SAE folder at {Path(spec).expanduser().resolve()}; check the path, or use a name "
                                f"from the registry ({sorted(registry())})")
    elif "/" in str(spec):
        release, _, sae_id = str(spec).partition("/")
        sae = _load_release(release, sae_id, device=device, dtype=dtype)
    else:
        raise ValueError(f"unknown SAE {spec!r}: not a folder, not in the registry ({sorted(registry())}), and "
                         "not a sae-lens 'release/id'")
    check_weights(sae, where)
    if model is not None:
        check_sae_fits(sae, model, strict=strict)
        hook = str(sae.cfg.metadata.hook_name)
        where = block_device(model, layer_of(hook)) if hook.startswith("blocks.") else block_device(model)
        if where != sae.W_enc.device:
            sae = sae.to(where)  # a model split over GPUs: beside the block it reads
    sae.sas_name = "/".join(spec) if isinstance(spec, tuple) else str(spec)  # carried into SAS vectors' metadata
    sae.sas_sha256 = sae_sha256(spec)
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


def _looks_like_path(spec: str) -> bool:
    """True for a spec that names a local path (``./x``, ``../x``, ``/x``, ``~/x``, or under an existing folder):
    sae-lens release names never start so, so a missing folder is reported as missing, not as a release."""
    if spec.startswith((".", "/", "~")) or spec.endswith("/") or "\\" in spec:
        return True
    parent = Path(spec).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def _load_folder(folder: Path, device: str, dtype: str):
    from safetensors import SafetensorError
    from sae_lens import SAE

    if (folder / "cfg.json").exists() and (folder / WEIGHTS).exists():
        kw = {}
    elif (folder / "params.npz").exists() or (folder / "params.safetensors").exists():
        kw = {"converter": gemma_scope_converter}
    else:
        kw = None
    if kw is not None:
        try:
            return SAE.load_from_disk(folder, device=device, dtype=dtype, **kw)
        except (SafetensorError, RuntimeError, KeyError, TypeError, ValueError, OSError) as e:
            # sae-lens and torch name neither the folder nor the fix (a truncated file, a cfg.json whose d_in or
            # d_sae disagrees with the weights' shapes)
            raise ValueError(f"cannot load the SAE in {folder}: {type(e).__name__}: {str(e)[:300]}. Check that "
                             f"cfg.json matches the weights and that the weight file is complete") from e
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

        with np.load(path / "params.npz", allow_pickle=False) as data:
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
        hook = resid_hook(int(layer.group(1)))
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


def check_weights(sae, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` (the weights file) and the key if a weight of ``sae`` is NaN or inf,
    or so large that its rows' squared norms overflow float32 (the residual stream squares them in RMSNorm):
    such an SAE steers to empty text, or a NaN threshold to the unsteered text, without any other error."""
    for key, t in sae.state_dict().items():
        t = t.detach().float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: {key} holds {int((~torch.isfinite(t)).sum())} NaN or inf values; this SAE "
                             "cannot steer. Restore the file or retrain the SAE")
        if t.ndim == 2 and not torch.isfinite(t.square().sum(-1)).all():
            raise ValueError(f"{where}: {key} holds values as large as {t.abs().max().item():.3g}, which overflow "
                             "in the model's computations; this SAE cannot steer. Restore the file or retrain the SAE")


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


def sae_hook(sae) -> str:
    """The hook an SAE reads, e.g. ``blocks.9.hook_resid_post``."""
    meta = sae.cfg.metadata
    return meta.hook_name if hasattr(meta, "hook_name") else meta["hook_name"]


def sae_hash(sae) -> str:
    """:func:`tensor_hash` of an SAE's state dict: ties a saved SAS vector (and every per-SAE cache) to the exact
    weights it was built from, wherever they came from."""
    return tensor_hash(sae.state_dict())


def sae_layer(sae) -> int:
    """The block index of the hook an SAE reads."""
    return layer_of(sae_hook(sae))


def sae_name(sae) -> str:
    """The name an SAE was loaded by (registry name, folder or release/id), else its hook."""
    return getattr(sae, "sas_name", None) or sae_hook(sae)


def sae_sha256(spec) -> str:
    """The sha256 of an SAE's weights file, from its card for the project's own SAEs (no hashing), from the
    file for a folder, and ``""`` for a hub release (sae-lens pins those by release and id)."""
    if isinstance(spec, tuple):
        return ""
    if str(spec) in registry():
        return registry()[str(spec)]["sha256"]
    folder = Path(spec)
    for name in (WEIGHTS, "params.safetensors", "params.npz"):
        if (folder / name).exists():
            return sha256(folder / name)
    return ""


def select_saes(model_name: str, layers=None, width: int | None = None) -> list[str]:
    """Names of the project's SAEs for ``model_name``: one per layer, at ``layers`` if given, of ``width`` if given:
    the one whose card says ``"default": true``, else the one trained on the most tokens, else the narrowest.
    ``ValueError`` if there is none, naming what is shipped."""
    cards = {n: c for n, c in registry().items() if c.get("model") == model_name}
    by_layer = {}

    def rank(kv):
        c = kv[1]
        return not c.get("default", False), -c.get("training", {}).get("tokens_seen", 0), c.get("width", 0), kv[0]
    for n, c in sorted(cards.items(), key=rank):
        layer = layer_of(c["hook"])
        if (layers is None or layer in layers) and (width is None or c.get("width") == width):
            by_layer.setdefault(layer, n)
    if not by_layer:
        raise ValueError(f"no shipped SAE for {model_name} at layers {layers} (width {width}); pass --sae NAME|FOLDER "
                         f"(shipped: {', '.join(sorted(registry()))})")
    return [by_layer[x] for x in sorted(by_layer)]


def load_saes(specs, model) -> dict:
    """``{layer: SAE}`` for SAE names/folders ``specs``, each checked against ``model``; two at one layer is an error."""
    saes = {}
    for spec in specs:
        sae = load_sae(spec, model)
        if sae_layer(sae) in saes:
            raise ValueError(f"two SAEs read layer {sae_layer(sae)}: {saes[sae_layer(sae)].sas_name} and {spec}; "
                             "give one SAE per layer")
        saes[sae_layer(sae)] = sae
    return saes

