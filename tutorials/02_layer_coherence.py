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
# # 2. Layer coherence: decode every layer, and choose one without labels
#
# A layer is *coherent* when decoding its hidden states with the **pre-trained** LM head gives back
# the input tokens. The paper's observation: fine-tuning erodes coherence in the last layers, and
# saliency reads best where it still holds. This notebook
#
# 1. computes DLS at every candidate layer and draws the layer × token heatmap;
# 2. plots the coherence curve of the pre-trained encoder and of the two fine-tuned default
#    classifiers;
# 3. compares the selector's scores and rules: which layer each one picks.

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
from captum_layer_saliency import (
    COHERENCE_SCORES,
    DecodedLayerSaliency,
    LayerCoherenceSelector,
    find_model_parts,
    load_default,
)
from captum_layer_saliency import viz
from captum_layer_saliency.data.sst2 import load_sst2
from captum_layer_saliency.zoo.load import load_pretrained_encoder
from captum_layer_saliency.models.classifier import special_token_ids

clf = load_default("sst2")

# %% [markdown]
# ## Every layer at once
#
# With `selector=None`, `attribute` returns a list: one `(batch, seq)` map per candidate layer (the
# embeddings, then each of the 6 blocks). The network below each layer runs once; each layer's
# integrated-gradients step reruns only the blocks above it (with `layer_method="gradient"`, one
# forward and one backward serve them all).

# %%
sentence = "the acting is superb , but the script is a lazy , predictable mess ."
enc = clf.encode([sentence])
ids, mask = enc["input_ids"], enc["attention_mask"]

every_layer = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer, selector=None)
maps = every_layer.attribute(ids, attention_mask=mask)
print(len(maps), "maps of shape", tuple(maps[0].shape))

# The default explainer uses the layer chosen once for this model (stored with it).
dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
picked = dls.attribute(ids, attention_mask=mask)
chosen = dls.last_selected_[0][0]
print("prediction:", clf.labels[int(dls.last_target_[0])])
print("chosen layer:", dls.layer_name(chosen))
assert torch.allclose(picked, maps[chosen])  # the selected map is that layer's map

# %%
tokens = clf.tokenizer.convert_ids_to_tokens(ids[0])[1:-1]  # drop [CLS] and [SEP] (always 0)
grid = torch.stack([m[0, 1:-1] for m in maps])  # (layers, tokens)
names = ["embeddings"] + [f"block {i}" for i in range(1, len(maps))]
viz.plot_layer_token_heatmap(
    grid, tokens, names, selected=chosen,
    title=f"DLS per layer, explained class: {clf.labels[int(dls.last_target_[0])]}",
)

# %% [markdown]
# Each row is scaled to ±1 (saliency magnitudes differ by orders of magnitude across layers); the
# starred, outlined row is the layer the selector chose for this model. Shallow rows are noisy;
# in the last block the gradient reaches only [CLS] (the pooler reads nothing else), so its
# identity map is empty.

# %% [markdown]
# ## The coherence curve: pre-trained encoder vs fine-tuned classifiers
#
# `LayerCoherenceSelector.fit` runs forward passes only over **unlabelled** sentences and records,
# for each layer, the mean coherence over the real (non-special) tokens. The default score,
# `self_recovery`, is the share of positions whose top-1 decoded token is their own input token.
# We fit it on 32 SST-2 validation sentences (labels unused) for the pre-trained encoder and for the
# SST-2 and AG News classifiers, always decoding with the *pre-trained* head.

# %%
texts = load_sst2("validation")["text"][:32]


def batches_for(tokenizer, size=16):
    out = []
    for start in range(0, len(texts), size):
        b = tokenizer(texts[start:start + size], padding=True, return_tensors="pt")
        out.append((b["input_ids"], b["attention_mask"]))
    return out


def model_forward(model):
    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask)

    return forward


mlm, tokenizer = load_pretrained_encoder()  # BertForMaskedLM: pre-trained encoder + MLM head
batches = batches_for(tokenizer)
specials = special_token_ids(tokenizer)

selectors = {}
selectors["pre-trained encoder"] = LayerCoherenceSelector(mlm.cls).fit(
    model_forward(mlm), find_model_parts(mlm).layers, batches, special_token_ids=specials
)
for task, label in (("sst2", "SST-2 classifier"), ("ag_news", "AG News classifier")):
    model = clf if task == "sst2" else load_default(task)
    selectors[label] = LayerCoherenceSelector(model.lm_head).fit(
        model_forward(model.model), find_model_parts(model.model).layers, batches,
        special_token_ids=specials,
    )
for label, sel in selectors.items():
    curve = [round(float(v), 3) for v in sel.scores_]
    print(f"{label:>20}: {curve} -> picks {names[sel.selected_[0]]}")

# %%
viz.plot_coherence_curves(
    {label: sel.scores_ for label, sel in selectors.items()},
    layers=["emb"] + [str(i) for i in range(1, len(names))],
    selected={label: sel.selected_[0] for label, sel in selectors.items()},
    title="Coherence per layer (32 SST-2 sentences, real tokens)",
)

# %% [markdown]
# The pre-trained encoder stays coherent through its last block; fine-tuning on SST-2 erodes the
# late blocks most, AG News less. The stars mark the default rule's pick, `elbow`: the layer just
# before the steepest fall of coherence from one layer to the next, i.e. the deepest layer before
# fine-tuning stops preserving token identity; it needs no threshold. (The curves on all 872 dev
# sentences are in [docs/default_models.md](../docs/default_models.md).)
#
# Thirty-two sentences (about 400 word tokens) are too few: on the SST-2 classifier the elbow lands
# on block 2 here, while the selection stored with the model, fitted on 3,615 word tokens of
# unlabelled training text, picks block 5 (the last block is excluded: its word positions get no
# gradient). `benchmarks/calibration_budget.py` measured how many tokens fix the choice (1,500 on
# SST-2), which is why DLS calibrates on 2,000 word tokens before it freezes its layer.
#
# ## Scores and rules
#
# Four per-position scores are available (`COHERENCE_SCORES`): `self_recovery`, `input_mass` (the
# decoded probability on any of the input's tokens), `own_prob` (the probability of the position's
# own token) and `neg_entropy`. The rules (`SELECTION_RULES`) turn per-layer scores into a choice:
# `elbow` (the default), `deepest` (the deepest layer within `theta` of the best), `argmax`,
# `weighted` (fuse every layer within `theta` of the best, weighted by score) and `fixed`. A fitted
# selector keeps its scores, so re-applying a rule is free (`select`).

# %%
import pandas as pd

sst2_layers = find_model_parts(clf.model).layers
rows = []
score_curves = {}
for score in COHERENCE_SCORES:
    if score == "self_recovery":  # the default score: fitted above already
        fitted = selectors["SST-2 classifier"]
    else:
        fitted = LayerCoherenceSelector(clf.lm_head, score=score).fit(
            model_forward(clf.model), sst2_layers, batches, special_token_ids=specials
        )
    score_curves[score] = fitted.scores_
    for rule in ("elbow", "deepest", "argmax", "weighted"):
        idx, weights = LayerCoherenceSelector(score=score, rule=rule).select(fitted.scores_)
        rows.append({
            "score": score,
            "rule": rule,
            "layer(s) picked": ", ".join(names[i] for i in idx),
            "weights": ", ".join(f"{float(w):.2f}" for w in weights),
        })
pd.DataFrame(rows).set_index(["score", "rule"])

# %%
# The scores live on different scales (neg_entropy is negative): min-max scale them.
scaled = {s: (c - c.min()) / (c.max() - c.min()) for s, c in score_curves.items()}
viz.plot_coherence_curves(
    scaled,
    layers=["emb"] + [str(i) for i in range(1, len(names))],
    ylabel="score, min-max scaled per score",
    title="SST-2 classifier: the four coherence scores",
)

# %% [markdown]
# ## One fit, every rule
#
# The explainer's selector already holds the model's per-layer scores (stored with the default
# model; `dls.calibrate(texts)` or `dls.fit_selector(batches)` fit them for another model), and
# `attribute` runs only the selected layer(s). A fitted selector keeps its scores, so the other
# rules need no second fit: copy it and re-apply the rule. The rules on our sentence:

# %%
import copy

from IPython.display import HTML

print(dls.selector)  # self_recovery + elbow, scores stored with the model; block 6 excluded

fragments = []
for rule in ("elbow", "deepest", "argmax", "weighted"):
    sel = copy.copy(dls.selector)  # shares the fitted scores
    sel.rule = rule
    sel.selected_, sel.weights_ = sel.select(sel.scores_)
    explainer = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer, selector=sel)
    s = explainer.attribute(ids, attention_mask=mask)[0, 1:-1]
    picked_names = " + ".join(names[i] for i in sel.selected_)
    fragments.append(viz.render_html(tokens, s, title=f"rule={rule}: {picked_names}"))
HTML("".join(fragments))

# %% [markdown]
# Next: [03_compare_with_captum.ipynb](03_compare_with_captum.ipynb) measures whether these
# explanations are faithful, next to Captum's baselines.
