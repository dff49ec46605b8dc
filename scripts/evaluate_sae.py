"""Measure SAEs on held-out text and on the contexts steering reads; print JSON, optionally update registry cards.

    python scripts/evaluate_sae.py --sae gemma-3-270m-L9-4k --sae gemma-3-270m-L5-4k --tokens 200000 --write-card \
        --heldout ../shared/data/corpus/enwiki-2014-heldout --data ../shared/data

Metrics (``sas.evaluation.sae_quality``), on ``--heldout`` text (never used in training), as the field reports
them: the loss difference spliced minus clean (nats per predicted token) and the KL divergence to the clean
next-token distribution, each with a 95% bootstrap interval over rows, on ``--ce-tokens`` tokens of unpadded
128-token rows (the SAE's reconstruction replaces its hook after BOS); explained variance, mean L0, dead and
dense (> 10% of tokens) fractions on ``--tokens`` non-BOS tokens; CE loss recovered; explained variance at the
answer-letter token of the CAA A/B *test* prompts, and on all tokens of the held-out 20% of the sentiment prompts.
Several SAEs share one pass of the model per hook and one clean loss. ``--curve RUN`` measures every milestone of
a ``sas train-sae`` run (1M, 3M, 10M, 30M tokens): the learning curve.

The SAE cards' numbers come from ``--dtype float32 --ce-tokens 12192`` (96 rows) on
``../shared/data/corpus/enwiki-2014-heldout/enwiki2014-0026.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sas.activations.codes as SC  # noqa: E402
import sas.activations.residual as SR  # noqa: E402
import sas.evaluation.sae_quality as SQ  # noqa: E402
from sas.files import write_atomic  # noqa: E402
from sas.hashing import held_out_fifth  # noqa: E402
import sas.load.saes as S  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the default --data: the project's staged data sets


def heldout_files(path: Path) -> list[Path]:
    """The ``.jsonl`` files of a held-out corpus (a file or a folder); a clear error if there are none."""
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no held-out corpus at {path}: pass --heldout a folder or file of jsonl lines with a "
                                "'text' field (../shared/data/corpus/enwiki-2014-heldout, or the small "
                                "sas/data/text/enwiki_heldout_sample.jsonl)")
    return files


def heldout_texts(path: Path):
    """Yield the ``text`` of every line of the held-out corpus at ``path`` (a ``.jsonl`` file or a folder)."""
    for f in heldout_files(path):
        for line in open(f, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)["text"]


def ab_test_prompts(data: Path = DATA) -> list[str]:
    """CAA A/B test prompts ending in the answer letter (``question + "\\n\\nAnswer: (" + letter``), both letters."""
    out = []
    caa = data / "caa" / "datasets" if (data / "caa" / "datasets").is_dir() else data / "caa"
    files = sorted((caa / "test").glob("*/test_dataset_ab.json"))
    if not files:
        raise FileNotFoundError(f"no CAA A/B test sets under {data}: pass --data ../shared/data (or sas/data)")
    for f in files:
        for item in json.loads(f.read_text()):
            for ans in (item["answer_matching_behavior"], item["answer_not_matching_behavior"]):
                out.append(f"{item['question']}\n\nAnswer: ({ans.strip()[1]}")
    return out


def sentiment_heldout(n: int, data: Path = DATA) -> list[str]:
    """Sentiment prompts + continuations whose md5 falls in the 20% that SAE training never saw."""
    out = []
    for f in sorted((data / "sentiment").glob("*_prompts.jsonl")):
        for line in open(f, encoding="utf-8"):
            row = json.loads(line)
            if held_out_fifth(row["prompt"]["text"]):
                out.append(row["prompt"]["text"] + row["continuation"]["text"])
    if n and not out:
        raise FileNotFoundError(f"no sentiment prompts under {data / 'sentiment'}: pass --data ../shared/data "
                                "(or sas/data)")
    return out[::max(1, len(out) // n)][:n] if n else []


def card_table(cards: dict) -> list[str]:
    """Markdown lines: one row per card with measured ``metrics`` (the registry's, or any ``{name: card}``), in the
    field's terms: loss difference and KL with their intervals, explained variance, L0, dead and dense features."""
    lines = ["| SAE | training tokens | loss difference (nats) [95%] | KL [95%] | explained variance | mean L0 | "
             "dead | dense | EV at A/B answer token | EV on sentiment text |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, card in cards.items():
        m = card.get("metrics") or {}
        h = m.get("heldout")
        if not h:
            continue
        tokens = card.get("training", {}).get("tokens_seen")
        dead_on = h.get("n_dead_tokens", h.get("n_tokens"))

        def ci(key):
            if key not in h:
                return "not measured"
            lo, hi = h.get(f"{key}_ci") or (float("nan"), float("nan"))
            return f"{h[key]:+.3f} [{lo:.3f}, {hi:.3f}]" if key == "loss_delta" else f"{h[key]:.3f} [{lo:.3f}, {hi:.3f}]"
        lines.append(f"| `{name}` | {tokens / 1e6:.2f}M | {ci('loss_delta')} | {ci('kl')} | "
                     f"{h['explained_variance']:.3f} | {h['mean_l0']:.1f} | {h['dead_fraction']:.1%} (of {dead_on:,} "
                     f"tokens) | {h.get('dense_fraction', float('nan')):.2%} | "
                     f"{m.get('ab_answer_token', {}).get('explained_variance', float('nan')):.3f} | "
                     f"{m.get('sentiment_tokens', {}).get('explained_variance', float('nan')):.3f} |")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", action="append", default=[], help="registry name, folder, or sae-lens release/id such "
                    "as gemma-scope-2-270m-pt-res/layer_9_width_16k_l0_small (needs the hub) (repeatable)")
    ap.add_argument("--curve", type=Path, action="append", default=[], help="a sas train-sae run folder: measure "
                    "each SAE at each milestone (the learning curve)")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--dtype", default="bfloat16", help="model dtype (bfloat16 is 2x faster on this CPU)")
    ap.add_argument("--heldout", type=Path, help="held-out text (a jsonl file or a folder of them, "
                    "'text' per line), e.g. ../shared/data/corpus/enwiki-2014-heldout")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the CAA test and sentiment prompt sets "
                    "(default ../shared/data)")
    ap.add_argument("--tokens", type=int, default=200_000, help="held-out tokens for explained variance, L0, dead")
    ap.add_argument("--ce-tokens", type=int, default=8192)
    ap.add_argument("--dead-tokens", type=int, default=0, help="count dead features over this many held-out "
                    "tokens in one streamed pass (the quality bar counts over 1,000,000); 0: over --tokens")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--sentiment-prompts", type=int, default=500)
    ap.add_argument("--ab-prompts", type=int, default=0, help="use only this many A/B test prompts (0: all 700)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--write-card", action="store_true", help="store the metrics in the registry cards")
    ap.add_argument("--table", action="store_true", help="print the measured cards of the shipped SAEs as a Markdown "
                    "table and exit (no model, nothing measured)")
    args = ap.parse_args(argv)
    if args.table:
        print("\n".join(card_table(S.registry())))
        return
    if args.heldout is None:
        ap.error("--heldout is needed to measure (e.g. ../shared/data/corpus/enwiki-2014-heldout)")
    for run in args.curve:
        found = sorted((run / "milestones").glob("*/*/cfg.json"), key=lambda p: (p.parent.name, int(p.parts[-3][:-1])))
        found += sorted((run / "final").glob("*/cfg.json"))
        if not found:
            ap.error(f"no milestone SAEs under {run}/milestones or {run}/final: is it a sas train-sae run folder?")
        args.sae += [str(p.parent) for p in found]
    if not args.sae:
        ap.error("pass --sae or --curve")
    heldout_files(args.heldout)  # check the inputs before the model loads
    ab, senti = ab_test_prompts(args.data), sentiment_heldout(args.sentiment_prompts, args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sas.load.models import load_model

    t0 = time.time()
    model = load_model(args.model, dtype=getattr(torch, args.dtype))
    saes = {name: S.load_sae(name, model) for name in args.sae}
    tokens = SR.token_chunks(model, heldout_texts(args.heldout), args.context, max_tokens=args.tokens)
    ce_rows = tokens[:max(1, args.ce_tokens // (args.context - 1))]
    if args.ab_prompts:
        ab = ab[::max(1, len(ab) // args.ab_prompts)][:args.ab_prompts]
    clean = SQ.ce_losses(model, None, ce_rows, which=("clean",))["clean"] if args.ce_tokens else float("nan")
    dead = {}
    if args.dead_tokens:
        dead_rows = SR.token_chunks(model, heldout_texts(args.heldout), args.context, max_tokens=args.dead_tokens)
        counts, n_dead_tokens = SC.firing_counts(model, saes, dead_rows, progress=True)
        dead = {n: {"dead_fraction": (c == 0).float().mean().item(), "n_dead_tokens": n_dead_tokens,
                    "rare_fraction_under_1e-5": (c < 1e-5 * n_dead_tokens).float().mean().item()}
                for n, c in counts.items()}
    acts, ab_acts, senti_acts, zero, results = {}, {}, {}, {}, {}
    for name, sae in saes.items():
        hook = sae.cfg.metadata.hook_name
        if hook not in acts:
            acts[hook] = SR.hook_activations(model, tokens, hook)
            ab_acts[hook] = SR.prompt_activations(model, ab, hook, last_token_only=True)
            senti_acts[hook] = SR.prompt_activations(model, senti, hook, last_token_only=False)
            zero[hook] = SQ.ce_losses(model, sae, ce_rows, which=("zero",))["zero"] if args.ce_tokens else float("nan")
        m = SQ.SAEMetrics(**SQ.reconstruction_metrics(sae, acts[hook]))
        if args.ce_tokens:
            m.n_ce_tokens = ce_rows.numel() - len(ce_rows)
            m.ce_loss_clean, m.ce_loss_zero = clean, zero[hook]
            m.ce_loss_spliced = SQ.ce_losses(model, sae, ce_rows, which=("spliced",))["spliced"]
            m.ce_loss_recovered = (m.ce_loss_zero - m.ce_loss_spliced) / (m.ce_loss_zero - m.ce_loss_clean)
            sp = SQ.splice_metrics(model, sae, ce_rows)
            m.loss_delta, m.loss_delta_ci, m.kl, m.kl_ci = sp["loss_delta"], sp["loss_delta_ci"], sp["kl"], sp["kl_ci"]
        res = {"heldout": m.to_dict(),
               "ab_answer_token": SQ.reconstruction_metrics(sae, ab_acts[hook]),
               "sentiment_tokens": SQ.reconstruction_metrics(sae, senti_acts[hook]),
               "measured": {"date": datetime.date.today().isoformat(), "model_dtype": args.dtype,
                            "heldout": str(args.heldout), "context": args.context,
                            "command": "python scripts/evaluate_sae.py " + " ".join(argv or sys.argv[1:])}}
        h = res["heldout"]
        if name in dead:
            h["dead_fraction_on_tokens"] = h["dead_fraction"]
            h.update(dead[name])
        training = Path(name) / "training.json"
        if training.exists():
            res["training_tokens"] = json.loads(training.read_text())["tokens"]
        res["targets"] = {  # the quality bar, on held-out text
            "loss_delta <= 0.25 at mean_l0 <= 80": h["loss_delta"] <= 0.25 and h["mean_l0"] <= 80,
            "explained_variance >= 0.90": h["explained_variance"] >= 0.90,
            "ce_loss_recovered >= 0.90": h["ce_loss_recovered"] >= 0.90,
            "16 <= mean_l0 <= 100": 16 <= h["mean_l0"] <= 100,
            f"dead_fraction <= 0.05 (on {h.get('n_dead_tokens', h['n_tokens'])} held-out tokens)": h["dead_fraction"] <= 0.05,
        }
        results[name] = res
        print(json.dumps({name: res}), flush=True)
        if args.write_card and name in S.registry():
            card_path = S.SAE_DIR / f"{name}.json"
            card = json.loads(card_path.read_text())
            card["metrics"] = res
            write_atomic(card_path, lambda t: t.write_text(json.dumps(card, indent=1) + "\n"))
    print(f"[evaluate] {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
