"""Copy an SAE that ``sas train-sae`` exported into the registry (``saes/``): 16-bit weights and a card.

    python -m sas.training.ship RUN/final/L9-16k --name gemma-3-270m-L9-16k-topk --saes saes

The card records what the SAE is (model, hook, width, k), how it was trained (tokens, settings, the command
that resumes the run) and the sha256 of its weights; ``scripts/evaluate_sae.py --write-card`` adds the
metrics. Metrics of a card whose weights changed are dropped, never carried over.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from ..files import write_atomic, write_text


def ship(exported: Path, saes_dir: Path, name: str, status: str = "complete", default: bool = False) -> Path:
    """Write ``saes_dir/<name>/`` (sae-lens folder, weight matrices in whichever of float16 and bfloat16 loses less)
    and ``saes_dir/<name>.json`` (the card) from an exported SAE folder; return the card's path. ``default``: the
    card says so, and commands without ``--sae`` use this SAE at its layer (:func:`sas.load.saes.select_saes`)."""
    from safetensors.torch import load_file, save_file

    from ..hashing import sha256
    from ..load.saes import WEIGHTS

    cfg = json.loads((exported / "cfg.json").read_text())
    training = json.loads((exported / "training.json").read_text())
    state = load_file(exported / WEIGHTS)
    for key in ("W_enc", "W_dec"):
        w = state[key].float()
        err = {dt: ((w - w.to(dt).float()).norm() / w.norm()).item() for dt in (torch.float16, torch.bfloat16)}
        state[key] = w.to(min(err, key=err.get)).contiguous()
    bad = [k for k, v in state.items() if not torch.isfinite(v.float()).all()]
    if bad:
        raise ValueError(f"{exported / WEIGHTS}: {bad} hold non-finite values in 16 bits; not shipped")
    dest = saes_dir / name
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / WEIGHTS, lambda tmp: save_file(state, tmp))
    write_text(dest / "cfg.json", json.dumps(cfg))
    card_path = saes_dir / f"{name}.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    s = training["settings"]
    saes = " ".join(f"--sae {layer}:{width}" for layer, width in s["saes"])
    card = {
        "name": name, "model": cfg["metadata"]["model_name"], "hook": cfg["metadata"]["hook_name"],
        "architecture": "topk", "trained_as": f"topk (k={s['k']}) by sas train-sae",
        "d_in": cfg["d_in"], "width": cfg["d_sae"], "k": s["k"],
        "weights_dtype": {k: str(v.dtype).replace("torch.", "") for k, v in state.items()},
        "status": status,
        "training": {
            "tokens_seen": training["tokens"], "tokens_planned": s["tokens"], "steps": training["step"],
            "settings": {k: v for k, v in s.items() if k not in ("corpus", "data")},
            "data": {"corpus": [Path(c).name for c in s["corpus"]], "prompt_frac": s["prompt_frac"],
                     "prompts": "CAA A/B prompts of the generate splits with each answer; sentiment prompts + "
                                "continuations whose md5 % 5 != 0",
                     "excluded": "BOS and other special tokens; no held-out text, no CAA test split"},
            "command": f"sas train-sae {saes} --tokens {s['tokens']} --k {s['k']}",
        },
        "date": datetime.date.today().isoformat(), "folder": name, "sha256": sha256(dest / WEIGHTS),
    }
    if default:
        card["default"] = True
    card["metrics"] = old.get("metrics", {}) if old.get("sha256") == card["sha256"] else {}
    write_text(card_path, json.dumps(card, indent=1) + "\n")
    return card_path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exported", type=Path, help="an SAE folder written by sas train-sae (RUN/final/<sae>)")
    ap.add_argument("--name", required=True, help="registry name, e.g. gemma-3-270m-L9-16k-topk")
    ap.add_argument("--saes", type=Path, default=Path("saes"), help="the registry folder")
    ap.add_argument("--status", default="complete")
    ap.add_argument("--default", action="store_true", help="the SAE commands use at its layer without --sae")
    args = ap.parse_args(argv)
    print(ship(args.exported, args.saes, args.name, args.status, args.default))


if __name__ == "__main__":
    main()
