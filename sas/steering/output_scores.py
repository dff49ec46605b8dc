"""Output scores of SAE features (Arad, Mueller and Belinkov 2025, "SAEs Are Good for Steering - If You Select
the Right Features"): how strongly amplifying a feature makes the model predict the feature's own logit-lens
tokens.

Implemented as their code does it (``technion-cs-nlp/saes-are-good-for-steering``, ``src/output_score.py``
``get_output_score`` with ``src/sae_utils.py`` ``AmlifySAEHook`` and ``src/utils.py`` ``cache_logit_lens``):

- logit lens: the top ``k = 20`` tokens of ``softmax(unembed(final_norm(W_dec[f])))``;
- on the neutral prompt ``"From my experience,"`` the SAE code of the layer's output at the *last* token gets
  ``amp_factor (10) x`` the largest code value at that token added to feature ``f``, decoded with the SAE's error
  kept (for a linear decoder: ``resid[-1] += 10 * max(z[-1]) * W_dec[f]``);
- with ``p`` the next-token distribution of the amplified model, the score is
  ``max_{t in lens} p(t) * (1 - min_{t in lens} rank(t) / vocab)``.

Here it runs for every feature of an SAE at once: the prompt's residual at the SAE's layer is computed once and
only the blocks from it on run per feature, a batch of features per pass, with the unembedding at the last
position only; the scores are cached per SAE (:mod:`sas.activations.sae_cache`).
"""

from __future__ import annotations

import torch

from ..activations.sae_cache import cached
from ..forward.run import encode as encode_tokens
from ..forward.run import fast_layout, logits_at, read_hooks
from ..load.saes import sae_hook, sae_layer
from .edits import added_at_last

NEUTRAL_PROMPT = "From my experience,"  # output_score.py's neutral_sentence
AMP_FACTOR = 10.0  # get_output_score's amp_factor
LOGIT_LENS_K = 20  # output_score.py's --logit_lens_top_k
VERSION = 1


@torch.no_grad()
def logit_lens_tokens(model, sae, k: int = LOGIT_LENS_K, features=None, chunk: int = 256) -> torch.Tensor:
    """The top ``k`` tokens of each feature's decoder direction through the final norm and the unembedding:
    ``[n_features, k]`` token ids (all features, or ``features``)."""
    idx = torch.arange(sae.cfg.d_sae) if features is None else torch.as_tensor(features, dtype=torch.long)
    dtype = model.W_U.dtype
    out = []
    for i in range(0, len(idx), chunk):
        w = sae.W_dec[idx[i:i + chunk]].detach().to(dtype)
        out.append(logits_at(model, w).topk(k, dim=-1).indices)  # softmax keeps the order
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


@torch.no_grad()
def amplified_probs(model, sae, idx: torch.Tensor, prompt: str = NEUTRAL_PROMPT, amp_factor: float = AMP_FACTOR,
                    batch_size: int = 128, progress: bool = False, desc: str = "output scores"):
    """Arad et al.'s amplification for each feature of ``idx`` (module docstring): yields ``(start, probs)``, the
    next-token distributions ``[batch, d_vocab]`` at the prompt's last token with features
    ``idx[start:start + batch]`` amplified in turn; the first item is ``(None, probs [1, d_vocab])`` of the
    unamplified model."""
    from tqdm.auto import tqdm

    fast_layout(model)
    layer, hook = sae_layer(sae), sae_hook(sae)
    pre = f"blocks.{layer}.hook_resid_pre"
    acts = read_hooks(model, torch.tensor(encode_tokens(model, [prompt])), [pre, hook])  # [1, pos, d_model] each

    def probs(x):  # the blocks from the SAE's on (its own again, so the edit is made by a hook at its hook point)
        out = model(x, start_at_layer=layer, stop_at_layer=model.cfg.n_layers)
        return torch.softmax(logits_at(model, out[:, -1]).float(), dim=-1)

    yield None, probs(acts[pre])
    z_last = sae.encode(acts[hook][:, -1].to(sae.dtype))
    boost = float(z_last.max()) * amp_factor  # AmlifySAEHook: max_act_value * amp_factor, from the clean code
    w_dec = sae.W_dec.detach()
    for i in tqdm(range(0, len(idx), batch_size), desc=desc, disable=not progress, mininterval=10):
        f = idx[i:i + batch_size]
        with added_at_last(model, hook, boost * w_dec[f]):
            p = probs(acts[pre].expand(len(f), -1, -1))
        yield i, p


@torch.no_grad()
def compute_output_scores(model, sae, prompt: str = NEUTRAL_PROMPT, amp_factor: float = AMP_FACTOR,
                          k: int = LOGIT_LENS_K, features=None, batch_size: int = 128,
                          progress: bool = False) -> torch.Tensor:
    """Output scores ``[n_features]`` (all features of ``sae``, or ``features``), as in the module docstring."""
    idx = torch.arange(sae.cfg.d_sae) if features is None else torch.as_tensor(features, dtype=torch.long)
    lens = logit_lens_tokens(model, sae, k, idx)
    vocab = model.cfg.d_vocab
    scores = torch.zeros(len(idx))
    for i, probs in amplified_probs(model, sae, idx, prompt, amp_factor, batch_size, progress):
        if i is None:
            continue
        ll = lens[i:i + len(probs)]
        p_lens = probs.gather(1, ll)
        best = p_lens.max(1).values
        # the best-ranked lens token's rank = how many tokens the model finds likelier than it
        min_rank = (probs > best[:, None]).sum(1).float()
        scores[i:i + len(probs)] = best * (1 - min_rank / vocab)
    return scores


def output_scores(model, sae, prompt: str = NEUTRAL_PROMPT, amp_factor: float = AMP_FACTOR,
                  k: int = LOGIT_LENS_K, rebuild: bool = False, progress: bool = False) -> torch.Tensor:
    """Output scores of all features of ``sae`` ``[d_sae]``, cached per SAE (computed on first use: about
    a minute per 4k features on one core)."""
    settings = {"version": VERSION, "model": model.cfg.model_name, "hook": sae_hook(sae), "prompt": prompt,
                "amp_factor": amp_factor, "k": k}

    def build():
        s = compute_output_scores(model, sae, prompt, amp_factor, k, progress=progress)
        return {"output_scores": s}, {"d_sae": sae.cfg.d_sae, "model_dtype": str(model.cfg.dtype)}

    tensors, _ = cached(sae, "output_scores", settings, build, rebuild, what="output scores")
    return tensors["output_scores"]


@torch.no_grad()
def compute_delta_token_confidence(model, sae, prompt: str = NEUTRAL_PROMPT, amp_factor: float = AMP_FACTOR,
                                   features=None, batch_size: int = 128, progress: bool = False) -> torch.Tensor:
    """ΔToken Confidence (Wang, Hu, Wang and Zou, ICLR 2026) ``[n_features]``: how much amplifying a feature
    changes the next-token distribution, as the top token's probability with the feature amplified minus the top
    token's probability without, ``max_v p_f(v) - max_v p(v)``, under the amplification of the output score
    (:func:`amplified_probs`, the neutral prompt's last token). Implemented from the paper's description: their
    code (``Xu0615/SAE4Steer``) could not be read here."""
    idx = torch.arange(sae.cfg.d_sae) if features is None else torch.as_tensor(features, dtype=torch.long)
    out = torch.zeros(len(idx))
    base = None
    for i, probs in amplified_probs(model, sae, idx, prompt, amp_factor, batch_size, progress, "token confidence"):
        if i is None:
            base = probs.max().item()
            continue
        out[i:i + len(probs)] = probs.max(1).values - base
    return out


def delta_token_confidence(model, sae, prompt: str = NEUTRAL_PROMPT, amp_factor: float = AMP_FACTOR,
                           rebuild: bool = False, progress: bool = False) -> torch.Tensor:
    """:func:`compute_delta_token_confidence` for all features of ``sae`` ``[d_sae]``, cached per SAE."""
    settings = {"version": VERSION, "model": model.cfg.model_name, "hook": sae_hook(sae), "prompt": prompt,
                "amp_factor": amp_factor}

    def build():
        s = compute_delta_token_confidence(model, sae, prompt, amp_factor, progress=progress)
        return {"delta_token_confidence": s}, {"d_sae": sae.cfg.d_sae, "model_dtype": str(model.cfg.dtype)}

    tensors, _ = cached(sae, "delta_token_confidence", settings, build, rebuild, what="ΔToken Confidence")
    return tensors["delta_token_confidence"]
