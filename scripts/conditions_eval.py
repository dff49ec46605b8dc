"""Conditional steering on a real case: steer gemma-3-270m towards negative sentiment only on prompts about cooking.

The condition is built from the cooking concept's texts (frames 1-6 of its 12 sentence frames) against texts that
are not about cooking (the same frames with office words, and the other topics' texts), in two forms: a dense
direction with a threshold (CAST's form) and SAE features with thresholds. The steering vector is CAA for
``sentiment-negative`` at the condition's layer. Held-out prompts (frames 7-12) with the condition (about cooking)
and without it are generated greedily unsteered, steered always, and steered under each condition; per prompt, the
score is the concept's VADER score (higher: more negative) of the continuation, and the effect is steered minus
unsteered, with paired bootstrap intervals:

- ``applies``: the effect on the prompts about cooking (should be as large as steering always),
- ``leakage``: the effect on the other prompts (should be 0),
- ``fired``: the fraction of each side's prompts on which the condition held.

    nice -n 15 python scripts/conditions_eval.py --sae gemma-3-270m-L9-16k-topk --n 40 --tokens 24 --out docs/conditions.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import sas
from sas.activations.contrast import Contrast
from sas.concepts.schema import get_concept
from sas.evaluation.stats import bootstrap_ci, paired_diff_ci
from sas.files import write_atomic
from sas.load.saes import load_sae, sae_layer, select_saes
from sas.steering.condition import condition_from_texts
from sas.steering.strength import layer_activations, raw_multiplier

TOPIC = "cooking"
OTHERS = ("sports", "music", "weather", "space", "animals", "medicine", "ocean", "weddings")
FRAMES = 12  # each topic concept: 8 topic phrases x 12 sentence frames, frame-major


def by_frame(texts: list[str], frames: range) -> list[str]:
    per = len(texts) // FRAMES
    return [t for f in frames for t in texts[f * per:(f + 1) * per]]


def interleave(*lists):
    return [x for group in zip(*lists) for x in group]


def prompts(frames: range, n: int) -> tuple[list[str], list[str]]:
    """``n`` prompts about cooking and ``n`` not (half office texts, half other topics) from ``frames``."""
    topic = get_concept(TOPIC)
    about = by_frame(topic.positive_texts(), frames)
    office = by_frame(topic.negative_texts(), frames)
    others = interleave(*[by_frame(get_concept(c).positive_texts(), frames) for c in OTHERS])
    half = n // 2
    return about[:n], interleave(office[::2][:half], others[::3][:n - half])


def effect(steered: list[float], plain: list[float]) -> dict:
    d, lo, hi = paired_diff_ci(steered, plain)
    return {"effect": round(d, 4), "lo": round(lo, 4), "hi": round(hi, 4)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", help="an SAE name or folder (default: the default shipped SAE at layer 9)")
    p.add_argument("--strength", type=float, default=0.2, help="relative strength: edit norm / mean residual norm")
    p.add_argument("--n", type=int, default=40, help="held-out prompts per side")
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--n-features", type=int, default=8)
    p.add_argument("--out", default="docs/conditions.jsonl")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model = sas.load_model()
    args.sae = args.sae or select_saes(model.cfg.model_name, [9])[0]
    sae = load_sae(args.sae, model)
    layer = sae_layer(sae)
    build_pos, build_neg = prompts(range(0, 6), 48)
    test_pos, test_neg = prompts(range(6, 12), args.n)
    assert not set(build_pos + build_neg) & set(test_pos + test_neg)

    neg = get_concept("sentiment-negative")
    vec = sas.build_vector(model, "caa", Contrast(neg.name, positive=neg.positive_texts(),
                                                  negative=neg.negative_texts()), [layer])
    mult = raw_multiplier(vec, layer, layer_activations(model, build_pos + build_neg, vec, layer), args.strength)
    conditions = {
        "dense (mean)": condition_from_texts(model, build_pos, build_neg, layer, name=TOPIC),
        "dense (last)": condition_from_texts(model, build_pos, build_neg, layer, name=TOPIC, reduce="last"),
        "features": condition_from_texts(model, build_pos, build_neg, layer, sae=sae, name=TOPIC,
                                         n_features=args.n_features),
    }
    scorer = neg.scorer()
    run = {"model": model.cfg.model_name, "dtype": str(model.cfg.dtype), "layer": layer, "sae": args.sae,
           "vector": "caa sentiment-negative", "relative_strength": args.strength, "multiplier": round(mult, 4),
           "n_per_side": args.n, "new_tokens": args.tokens, "decoding": "greedy"}

    def generate(cond=None, steered=True):
        if not steered:
            return sas.generate(model, test_pos + test_neg, args.tokens)
        with sas.steer(model, vec, mult, condition=cond):
            return sas.generate(model, test_pos + test_neg, args.tokens)

    say = lambda what: print(f"[{time.time() - t0:5.0f} s] {what}", flush=True)  # noqa: E731
    say("conditions: " + "; ".join(f"{c.describe()} {c.settings}" for c in conditions.values()))
    texts = {"unsteered": generate(steered=False), "always": generate()}
    say("generated unsteered and always")
    for name, cond in conditions.items():
        texts[name] = generate(cond)
        say(f"generated under {name}")
    scores = {k: scorer.score(v) for k, v in texts.items()}
    n = len(test_pos)
    rows = []
    for name in ("always", *conditions):
        s, base = scores[name], scores["unsteered"]
        row = {**run, "condition": name, "applies": effect(s[:n], base[:n]), "leakage": effect(s[n:], base[n:])}
        if name in conditions:
            cond = conditions[name]
            fired = cond.fires(model, test_pos + test_neg).float().tolist()
            row["fired"] = {side: {"rate": round(sum(f) / len(f), 4), "ci": [round(x, 4) for x in bootstrap_ci(f)]}
                            for side, f in (("about", fired[:n]), ("not_about", fired[n:]))}
            # a row the condition did not fire on must be the unsteered text, exactly
            same = [t == u for t, u, f in zip(texts[name], texts["unsteered"], fired) if not f]
            row["unfired_rows_unchanged"] = f"{sum(same)}/{len(same)}"
            row["condition_settings"] = cond.settings
            row["describe"] = cond.describe()
            if cond.kind == "features":
                row["features"] = describe_features(model, sae, cond)
        rows.append(row)
    rows.append({**run, "condition": "unsteered", "mean_score": {
        "about": round(sum(scores["unsteered"][:n]) / n, 4),
        "not_about": round(sum(scores["unsteered"][n:]) / (len(test_neg)), 4)},
        "examples": [{"prompt": pr, **{k: texts[k][i] for k in texts}} for i, pr in
                     [(0, test_pos[0]), (1, test_pos[1]), (n, test_neg[0]), (n + 1, test_neg[1])]],
        "seconds": round(time.time() - t0)})
    out = Path(args.out)
    write_atomic(out, lambda t: t.write_text("".join(json.dumps(r) + "\n" for r in rows)))
    print(table(rows))


def describe_features(model, sae, cond) -> list[dict]:
    """Each feature of a features condition: its threshold and the tokens its decoder direction promotes."""
    from sas.reports.features import logit_effects, top_contexts
    from sas.load.data import load_text_sample

    eff = logit_effects(model, sae, cond.features, k=6)
    ctx = top_contexts(model, sae, cond.features, load_text_sample(), k=2, max_tokens=8000)
    out = []
    for f, t in zip(cond.features, cond.thresholds):
        e = eff[eff.feature == f].iloc[0]
        c = ctx[ctx.feature == f]
        out.append({"feature": f, "threshold": round(t, 4), "promotes": list(e.promoted),
                    "contexts": c.context.tolist(), "frequency": round(float(c.frequency.iloc[0]), 5) if len(c) else 0})
    return out


def table(rows) -> str:
    lines = ["| steering | fires on cooking prompts | fires on other prompts | effect on cooking prompts "
             "(applies) | effect on other prompts (leakage) |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["condition"] == "unsteered":
            continue
        f = r.get("fired")
        fired = [f"{f[s]['rate']:.2f} [{f[s]['ci'][0]:.2f}, {f[s]['ci'][1]:.2f}]" for s in ("about", "not_about")] \
            if f else ["always", "always"]
        eff = [f"{r[k]['effect']:+.3f} [{r[k]['lo']:+.3f}, {r[k]['hi']:+.3f}]" for k in ("applies", "leakage")]
        lines.append(f"| {r['condition']} | {fired[0]} | {fired[1]} | {eff[0]} | {eff[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
