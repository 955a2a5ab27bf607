# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. DLS next to Captum's baselines
#
# Integrated Gradients, DeepLift and GradientSHAP (Captum's layer versions, at the embeddings, from
# a PAD baseline, as in `captum_layer_saliency.compare.methods.registry`) and DLS explain the same
# SST-2 sentences.
# We then measure ERASER **faithfulness**: *comprehensiveness* (how much the predicted class's
# probability drops when the top tokens are deleted; higher is better) and *sufficiency* (how much it
# drops when *only* the top tokens are kept; lower is better), averaged over the 1/5/10/20/50 % bins
# (AOPC).
#
# Six sentences say nothing statistically: this shows the workflow. The real numbers (hundreds of
# sentences, bootstrap confidence intervals, every Captum baseline) are in
# [BENCHMARKS.md](../BENCHMARKS.md).

# %%
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default models are bundled: no hub needed
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

torch.set_num_threads(1)  # small models: one thread is fastest, and kind to a shared CPU

# %matplotlib inline
import matplotlib

matplotlib.rcParams["figure.dpi"] = 80  # keeps the figures (and the notebook) small
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

# %%
import time

from captum_layer_saliency import load_default
from captum_layer_saliency import viz
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.data.sst2 import load_sst2
from captum_layer_saliency.metrics import aopc_curves, comprehensiveness, sufficiency

clf = load_default("sst2")
data = load_sst2("validation").select(range(6))
enc = clf.encode(data["text"])
ids, mask = enc["input_ids"], enc["attention_mask"]
with torch.no_grad():
    target = clf.forward_func(ids, mask).argmax(-1)  # explain the predicted class
special = clf.special_mask(ids)
for text, t in zip(data["text"], target.tolist()):
    print(f"{clf.labels[t]:>8}  {text}")

# %% [markdown]
# ## Explain with every method
#
# `get_method(name, clf, **options)` builds a method from the registry; every method has the same
# call, `attribute(input_ids, attention_mask, target) -> (batch, seq)`. To keep this notebook fast,
# Integrated Gradients runs **10 steps** instead of the registry's 25; GradientSHAP uses its default
# 5 samples. `random` is a control: a method worse than it is not explaining anything. DeepLift
# warns, rightly, that Captum has no DeepLift rule for a transformer's GELU, LayerNorm and attention
# softmax.

# %%
methods = {
    "dls": get_method("dls", clf),
    "integrated_gradients": get_method("integrated_gradients", clf, n_steps=10),
    "deeplift": get_method("deeplift", clf),
    "gradient_shap": get_method("gradient_shap", clf),
    "random": get_method("random", clf),
}
scores, seconds = {}, {}
for name, method in methods.items():
    method.attribute(ids[:1], mask[:1], target[:1])  # warm-up, not timed
    start = time.perf_counter()
    scores[name] = method.attribute(ids, mask, target)
    seconds[name] = (time.perf_counter() - start) / len(ids)
    print(f"{name:>22}: {1000 * seconds[name]:7.1f} ms per sentence")

# %%
from IPython.display import HTML

i = 0
n = int(mask[i].sum())
tokens = clf.tokenizer.convert_ids_to_tokens(ids[i, 1:n - 1])
HTML("<table>" + "".join(
    f"<tr><td>{name}</td><td>{viz.render_html(tokens, s[i, 1:n - 1])}</td></tr>"
    for name, s in scores.items()
) + "</table>")

# %% [markdown]
# Each row is coloured on its own scale (±its largest magnitude): the methods' raw units differ.
#
# ## Faithfulness
#
# The metrics are pure functions of `(forward, input_ids, attention_mask, scores, target,
# special_mask)` and return one value per example.

# %%
import pandas as pd

args = dict(pad_token_id=clf.tokenizer.pad_token_id)
table, curves = [], {}
for name, s in scores.items():
    comp = comprehensiveness(clf.forward_func, ids, mask, s, target, special, **args)
    suff = sufficiency(clf.forward_func, ids, mask, s, target, special, **args)
    per_bin = aopc_curves(clf.forward_func, ids, mask, s, target, special, **args)
    curves[name] = {k: per_bin[k].nanmean(0) for k in ("comprehensiveness", "sufficiency")}
    table.append({
        "method": name,
        "comprehensiveness ↑": comp.nanmean().item(),
        "sufficiency ↓": suff.nanmean().item(),
        "ms / sentence": 1000 * seconds[name],
    })
pd.DataFrame(table).set_index("method").sort_values("comprehensiveness ↑", ascending=False).round(3)

# %%
viz.plot_aopc_curves(curves, bins=[1, 5, 10, 20, 50], title="AOPC per bin (6 SST-2 sentences)")

# %%
viz.plot_cost_vs_faithfulness(
    {r["method"]: r["ms / sentence"] / 1000 for r in table},
    {r["method"]: r["comprehensiveness ↑"] for r in table},
    title="Cost vs faithfulness (6 sentences: illustration only)",
)

# %% [markdown]
# ## The same, with the comparison harness
#
# `run_comparison` does all of the above over a dataset, batch by batch: it appends rows to a JSONL
# file as they finish (an interrupted run resumes), counts forward and backward passes, and writes a
# report (`summary.md`, `summary.csv`, plots and an escaped `report.html`) with bootstrap confidence
# intervals. The command line is `python -m captum_layer_saliency compare`. A tiny run:

# %%
import tempfile
from pathlib import Path

from IPython.display import Markdown

from captum_layer_saliency.compare import run_comparison

out = Path(tempfile.mkdtemp(prefix="dls-compare-"))
run_comparison(
    clf, data, ["dls", "input_x_gradient", "random"], out,
    task="sst2", metrics=["comprehensiveness", "sufficiency"], progress=False,
)
print(sorted(p.name for p in out.iterdir()))
Markdown((out / "summary.md").read_text())

# %% [markdown]
# Next: [04_your_own_model.ipynb](04_your_own_model.ipynb) explains a Hugging Face model of your own.
