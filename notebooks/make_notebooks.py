"""Write the notebooks from the cell sources below (run: python notebooks/make_notebooks.py).

Kept as code so diffs stay readable; the .ipynb files are what users open."""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent

NOTEBOOKS = {
    "01_quickstart_dense.ipynb": [
        ("md", "# Quickstart: dense steering (CAA and ActAdd) on gemma-3-270m\n\n"
               "Loads the offline default model, builds a CAA vector from A/B pairs, scores the A/B behaviour, "
               "and steers open-ended text with ActAdd's \"Love\" - \"Hate\" vector. Small settings so it runs on a CPU "
               "in a few minutes."),
        ("code", "import torch\nimport sas\n\ntorch.manual_seed(0)\nmodel = sas.load_model()  # gemma-3-270m, "
                 "TransformerLens HookedTransformer\nmodel.cfg.n_layers, model.cfg.d_model"),
        ("md", "## CAA: mean difference at the answer letter, letter-balanced"),
        ("code", "pairs = sas.load_behavior(\"sycophancy\")[:40]\n"
                 "caa = sas.caa_vector(model, pairs, layers=[4, 6], behavior=\"sycophancy\")\n"
                 "caa.settings, caa.norms()"),
        ("code", "test = sas.load_behavior(\"sycophancy\", \"test\")[:10]\n"
                 "scorer = sas.ABScorer(model, test)\n"
                 "{m: round(scorer.score(caa, m, layers=[6])[\"p_match\"], 4) for m in (-2, 0, 2)}"),
        ("md", "A 270M base model answers these near chance, so the A/B score barely moves; the protocol is the "
               "one bigger models need. Open-ended sentiment shows steering on this model:"),
        ("code", "love = sas.actadd_vector(model, \"Love\", \"Hate\", layers=[8])\n"
                 "prompt = [\"I went up to my friend and said\"]\n"
                 "for m in (-10, 0, 10):\n"
                 "    with sas.steer(model, love, multipliers=m):\n"
                 "        print(m, sas.generate(model, prompt, max_new_tokens=20))"),
        ("code", "res = sas.run_task(model, \"sentiment\", love, 10, n_prompts=8, max_new_tokens=16)\n"
                 "base = sas.run_task(model, \"sentiment\", None, 0, n_prompts=8, max_new_tokens=16)\n"
                 "print(\"steered\", round(res[\"score\"], 3), \"masked\", round(res[\"score_masked\"], 3), "
                 "\"unsteered\", round(base[\"score\"], 3))"),
        ("md", "Vectors are values: they add, scale, save and load (safetensors + JSON metadata)."),
        ("code", "import tempfile, os\n"
                 "path = caa.save(os.path.join(tempfile.mkdtemp(), \"caa_sycophancy\"))\n"
                 "back = sas.SteeringVector.load(path)\n"
                 "mix = 0.5 * back - caa\n"
                 "mix.norms()"),
    ],
    "02_sparse_steering.ipynb": [
        ("md", "# Sparse activation steering (SAS) end to end\n\n"
               "Build a SAS vector in a shipped SAE's feature space from contrastive sentiment sentences, steer "
               "with it (the reconstruction error of the unsteered activation is kept), and compare with its dense "
               "direction."),
        ("code", "import torch\nimport sas\nfrom sas.load.saes import load_sae, select_saes\nfrom sas.methods.sas import "
                 "sas_vector_from_texts\nfrom sas.concepts.tasks import sentiment_pairs\n\n"
                 "model = sas.load_model()\n"
                 "name = select_saes('gemma-3-270m', [9])[0]  # the default layer-9 SAE (16k TopK, 30M tokens)\n"
                 "sae = load_sae(name, model)\nname, sae.cfg.d_sae"),
        ("code", "pos, neg = sentiment_pairs()\n"
                 "sv = sas_vector_from_texts(model, sae, pos, neg, tau=0.1)\n"
                 "sv.n_features(), sv.settings"),
        ("code", "prompt = [\"The weather today\"]\n"
                 "for m in (-4, 0, 4):\n"
                 "    with sas.steer(model, sv, multipliers=m):\n"
                 "        print(m, sas.generate(model, prompt, max_new_tokens=20))"),
        ("code", "dense = sv.to_dense()  # W_dec^T v\n"
                 "r_sparse = sas.run_task(model, 'sentiment', sv, 4, n_prompts=8, max_new_tokens=16)\n"
                 "r_dense = sas.run_task(model, 'sentiment', dense, 4, n_prompts=8, max_new_tokens=16)\n"
                 "round(r_sparse['score'], 3), round(r_dense['score'], 3)"),
    ],
    "03_feature_inspection.ipynb": [
        ("md", "# What do the selected features mean?\n\nFor each feature of a SAS vector: the tokens its decoder "
               "direction promotes and suppresses, the held-out Wikipedia contexts where it fires most, and a "
               "dashboard of HTML pages (one per feature) that shows it all at once."),
        ("code", "import pandas as pd\nimport sas\nfrom sas.load.saes import load_sae, select_saes\n"
                 "from sas.methods.sas import sas_vector_from_texts\nfrom sas.concepts.tasks import sentiment_pairs\n"
                 "from sas.evaluation.features import feature_table, top_contexts, overlap\n"
                 "from sas.load.data import load_text_sample\n\n"
                 "pd.set_option('display.max_rows', 12)\npd.set_option('display.max_colwidth', 80)\n"
                 "model = sas.load_model()\n"
                 "name = select_saes('gemma-3-270m', [9])[0]  # the default layer-9 SAE (16k TopK, 30M tokens)\nsae = load_sae(name, model)\n"
                 "pos, neg = sentiment_pairs()\n"
                 "sv = sas_vector_from_texts(model, sae, pos, neg, tau=0.1, behavior='sentiment')\nsv.n_features()"),
        ("code", "feature_table(model, sae, sv).head(8)"),
        ("code", "top_contexts(model, sae, sv.features()[:4].tolist(), load_text_sample(20), k=3, "
                 "max_tokens=5000)"),
        ("code", "half = sas_vector_from_texts(model, sae, pos[::2], neg[::2], tau=0.1)\n"
                 "overlap({'all pairs': sv, 'half the pairs': half})"),
        ("md", "## The dashboard\n\n`build_dashboard` writes an index page (the vector's features by |weight|, with "
               "how often each fires on the positive and the negative sentences) and one page per feature: top "
               "held-out contexts with the tokens shaded by activation (hover a token for its value), the "
               "activation histogram and density, and the logit-lens tokens. What every page needs is computed "
               "once per SAE and cached under `$SAS_CACHE`; here on 20,000 held-out tokens to keep it quick "
               "(`sas inspect --html OUT/ --vector V` uses all of them). The pages are self-contained HTML."),
        ("code", "import html\nfrom IPython.display import HTML\nfrom sas.reports.dashboard import build_dashboard\n\n"
                 "index = build_dashboard(model, sae, sv, 'dashboard', contrast=(pos, neg), n_features=12, "
                 "max_tokens=20_000)\n\n"
                 "def inline(page, height):\n"
                 "    \"\"\"A page of the dashboard in the notebook (an iframe holding the page itself).\"\"\"\n"
                 "    return HTML(f'<div><iframe srcdoc=\"{html.escape(page.read_text())}\" '\n"
                 "                f'style=\"width: 100%; height: {height}px; border: 1px solid #ccc\"></iframe></div>')\n\n"
                 "inline(index, 420)"),
        ("code", "inline(index.parent / f'feature_{sv.features()[0].item()}.html', 860)"),
    ],
    "04_sparse_vs_dense.ipynb": [
        ("md", "# Sparse versus dense on the same data\n\nCAA, SAS and the dense direction decoded from the SAS "
               "vector (`sas_dense`), built from the same activations and scored with the same sentiment task."),
        ("code", "import sas\nfrom sas.load.saes import load_sae, select_saes, sae_layer\nfrom sas.reports.plots import "
                 "plot_compare\nfrom sas.runs.compare import compare\n\nmodel = sas.load_model()\n"
                 "name = select_saes('gemma-3-270m', [9])[0]  # the default layer-9 SAE (16k TopK, 30M tokens)\nsae = load_sae(name, model)\n"
                 "layer = sae_layer(sae)"),
        ("code", "import tempfile, os\nout = os.path.join(tempfile.mkdtemp(), 'compare.jsonl')\n"
                 "df = compare(model, {layer: sae}, task='sentiment', multipliers=[-2, 0, 2], n_prompts=6, "
                 "max_new_tokens=12, progress=False, out=out)\n"
                 "df[['method', 'layer', 'multiplier', 'score', 'perplexity', 'n_features', 'cos_caa']]"),
        ("code", "from IPython.display import Image\nImage(str(plot_compare(df, out.replace('.jsonl', '.png'))))"),
    ],
    "05_feature_selection.ipynb": [
        ("md", "# Which features a sparse vector keeps: the selection rules on one concept\n\n"
               "The paper's SAS rule keeps features that fire on at least `tau` of one side's rows and drops those "
               "active on both sides. On `sentiment-negative` (positive side: negative sentences) that rule "
               "throws away most of the code difference, and SAS does not steer towards negative sentiment "
               "(docs/results.md). This notebook walks the concept through the other rules of "
               "`sas.methods.select`: shared features kept at their mean difference (`sas_diff`), output-score "
               "filtering (Arad et al. 2025, `sas_os`) and top-k, and shows what each keeps. The steering scores at "
               "matched fluency come from `sas bench`."),
        ("code", "import torch\nimport sas\nfrom sas.activations.contrast import Contrast\nfrom sas.concepts import "
                 "get_concept\nfrom sas.load.saes import load_sae, sae_layer\n\n"
                 "model = sas.load_model()\nsae = load_sae('gemma-3-270m-L9-16k-topk', model)  # the default layer-9 SAE\nlayer = sae_layer(sae)\n"
                 "c = get_concept('sentiment-negative')\n"
                 "contrast = Contrast(c.name, positive=c.positive_texts(), negative=c.negative_texts())\n"
                 "contrast.n_pairs, c.positive_texts()[0], c.negative_texts()[0]"),
        ("md", "## What each rule keeps\n\n`share_sq_diff` is the part of the squared mean code difference the "
               "kept features carry; `cos_dense` the cosine of the decoded vector with the residual mean difference "
               "(the CAA direction of the same data). Output scores are cached per SAE (shipped for ours)."),
        ("code", "from sas.runs.selection import compare_rules, shared_features\n"
                 "compare_rules(model, sae, contrast).round(3)"),
        ("md", "## The features the paper's rule drops\n\nThe largest code differences sit in features that fire "
               "on both sides, more on one: the rule drops them with the letter-like features it is meant for."),
        ("code", "shared_features(model, sae, contrast, n=8).round(3)"),
        ("md", "## The kept features of `sas_os`: tokens, output scores, firing on each side"),
        ("code", "from sas.methods.registry import build_vector\nfrom sas.evaluation.features import feature_table\n"
                 "v = build_vector(model, 'sas_os', contrast, [layer], {layer: sae})\n"
                 "print(v.n_features(), v.settings['per_layer'][layer])\n"
                 "feature_table(model, sae, v, contrast=contrast).head(8)"),
        ("md", "## Every candidate feature: mean difference against output score\n\nGrey: dropped by every "
               "rule; orange: kept by SAS (one-sided); blue: shared features `sas_diff` adds back; the line is "
               "`sas_os`'s threshold."),
        ("code", "import matplotlib.pyplot as plt\nfrom sas.activations.codes import encode\n"
                 "from sas.steering.output_scores import output_scores\nfrom sas.methods.select import "
                 "select_features\n"
                 "pos, neg = contrast.activations(model, [layer])\nzp, zn = encode(sae, pos[layer]), encode(sae, neg[layer])\n"
                 "os_ = output_scores(model, sae)\n"
                 "paper, _ = select_features(zp, zn)\ndiff, _ = select_features(zp, zn, shared='diff')\n"
                 "d = zp.mean(0) - zn.mean(0)\nfired = ((zp > 0).any(0) | (zn > 0).any(0))\n"
                 "fig, ax = plt.subplots(figsize=(6, 4))\n"
                 "for mask, col, lab in ((fired & (diff == 0), 'lightgrey', 'not kept'), "
                 "(paper != 0, 'tab:orange', 'SAS (one-sided)'), ((diff != 0) & (paper == 0), 'tab:blue', "
                 "'shared, kept by sas_diff')):\n"
                 "    ax.scatter(d[mask], os_[mask].clamp(min=1e-8), s=8, c=col, label=lab)\n"
                 "ax.axhline(0.01, color='k', lw=0.8, ls='--')\nax.set_yscale('log')\n"
                 "ax.set_xlabel('mean code difference (negative sentences - positive)')\n"
                 "ax.set_ylabel('output score')\nax.legend(fontsize=8)\nplt.show()"),
    ],
}

# 06: one section per mechanism; each list is a section of the notebook, in order (add a section: add a list)
CONDITIONS = [
    ("md", "## Conditions: steer only where the model's activations say so\n\n"
           "A condition is a value, like a vector: a dense direction with a threshold (CAST's form) or a few SAE "
           "features with activation thresholds. `sas.steer(..., condition=c)` reads it in the same forward pass "
           "that steers, and edits only the rows (or tokens) where it holds. Here: steer towards negative sentiment, "
           "but only on prompts about cooking."),
    ("code", "import torch\nimport sas\nfrom sas.concepts.schema import get_concept\nfrom sas.load.saes import load_sae\n\n"
             "model = sas.load_model()\n"
             "cooking = get_concept('cooking')  # 12 sentence frames x 8 cooking phrases, and the same frames about "
             "office things\n"
             "about, other = cooking.positive_texts(), cooking.negative_texts()\n"
             "build, held_out = slice(0, 48), slice(48, 96)  # frames 1-6 build the condition, 7-12 test it\n"
             "about[0], other[0]"),
    ("md", "### A dense condition (CAST)\n\nThe direction from the mean prompt without the condition to the mean "
           "prompt with it (each prompt: its residual at layer 9, averaged over its tokens, or its last token), on "
           "half of the building prompts; the threshold on the cosine with it that best separates the other half "
           "(balanced accuracy)."),
    ("code", "dense = sas.condition_from_texts(model, about[build], other[build], layer=9, name='cooking', "
             "reduce='last')\n"
             "print(dense.describe())\ndense.settings"),
    ("code", "prompts = about[held_out][::8] + other[held_out][::8]  # 6 held-out prompts of each kind\n"
             "dense.fires(model, prompts)"),
    ("md", "### A feature condition\n\nSAE features that fire more on the prompts about cooking, each with its "
           "own threshold (chosen on the fit half), and how many to keep (chosen on the tuning half). Per prompt: "
           "it holds if any prompt token fires."),
    ("code", "sae = load_sae('gemma-3-270m-L9-16k-topk', model)  # the default layer-9 SAE\n"
             "features = sas.condition_from_texts(model, about[build], other[build], layer=9, sae=sae, "
             "name='cooking', n_features=4)\n"
             "print(features.describe())\nfeatures.settings"),
    ("code", "from sas.evaluation.features import logit_effects\n"
             "logit_effects(model, sae, features.features, k=6)[['feature', 'promoted']]"),
    ("md", "### Steering under a condition\n\nThe receipt counts the edited positions per row: the rows where "
           "the condition does not hold have none, and their text is the unsteered text."),
    ("code", "neg = get_concept('sentiment-negative')\n"
             "vec = sas.contrastive_vector(model, neg.positive_texts(), neg.negative_texts(), [9], reduce='mean')\n"
             "receipt = sas.Receipt(rows=len(prompts))\n"
             "with sas.steer(model, vec, 1.0, condition=features, receipt=receipt):\n"
             "    steered = sas.generate(model, prompts, max_new_tokens=16)\n"
             "plain = sas.generate(model, prompts, max_new_tokens=16)\n"
             "for i, p in enumerate(prompts):\n"
             "    print(receipt.row(i)['9']['positions'], repr(p), '->', repr(steered[i]), "
             "'(unchanged)' if steered[i] == plain[i] else '')"),
    ("md", "### Per token, files, and what is refused\n\n`scope='token'` decides at each position (a feature "
           "condition read at a layer at or before the steered one). Conditions save and load as vectors do; "
           "`sas serve` requests name a saved condition in a steering term (`\"condition\": \"cooking\"`)."),
    ("code", "import os, tempfile\n"
             "path = features.save(os.path.join(tempfile.mkdtemp(), 'cooking'))\n"
             "back = sas.load_condition(path, model)\n"
             "back.describe()"),
    ("code", "late = sas.Condition('features', 9, model.cfg.model_name, 'cooking', scope='token', "
             "features=features.features, thresholds=features.thresholds, sae=sae)\n"
             "early = sas.contrastive_vector(model, neg.positive_texts(), neg.negative_texts(), [6])\n"
             "try:\n"
             "    with sas.steer(model, early, 1.0, condition=late):\n"
             "        pass\n"
             "except ValueError as e:\n"
             "    print(e)"),
]
COMPOSITION = [
    ("md", "## Composition: two vectors at once, and what each loses\n\n"
           "`sas.compose` tunes each vector alone on a tuning split (the strongest strength whose perplexity stays "
           "within the budget, 1.5x unsteered), then steers with both at those strengths on test prompts and "
           "reports, per pair and setup, each concept's score together against alone (paired bootstrap "
           "intervals), the perplexity together against each alone, and the overlap of the two vectors: the "
           "cosine of their dense directions, and for sparse vectors the SAE features they share. Here one pair, "
           "dense (CAA + CAA), sparse (SAS + SAS) and mixed, at layer 5, with tiny settings; `docs/composition.md` "
           "has the full run."),
    ("code", "import pandas as pd\nimport tempfile, os\n"
             "out = os.path.join(tempfile.mkdtemp(), 'compose.jsonl')\n"
             "r = sas.compose(model, {5: 'gemma-3-270m-L5-16k-topk'}, pairs=['sentiment-positive+weddings'],\n"
             "                setups=['caa@5+caa@5', 'sas@5+sas@5', 'caa@5+sas@5'], n_tune=8, n_test=12,\n"
             "                max_new_tokens=8, strengths=(0.01, 0.02, 0.05), extend=0, out=out, progress=False)\n"
             "table = pd.json_normalize(sas.composition_table(r))\n"
             "table.filter(regex='^(setup|kind|why|a_|b_|ppl_together$|overlap.(cosine|n_shared)$)').T"),
]
NOTEBOOKS["06_conditions_and_composition.ipynb"] = [
    ("md", "# Conditions and composition\n\nSteering that waits for a condition, and steering with several vectors "
           "at once. Small settings so it runs on a CPU in a few minutes."),
    *CONDITIONS, *COMPOSITION]


def main(names=None):
    """Write the notebooks ``names`` (default all; their outputs are lost: run execute_notebooks.py after)."""
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                    for kind, src in cells]
        nbf.write(nb, HERE / name)
        print(HERE / name)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
