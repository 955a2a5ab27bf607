"""Write the tutorial notebooks from the cell sources below, and execute them in place.

The committed notebooks carry their executed outputs; this script is how they are made::

    .venv/bin/python tutorials/_build.py            # write and execute all of them
    .venv/bin/python tutorials/_build.py 03 --no-execute

Edit the cells here (or in the ``_*.py`` cell modules beside it), not in the ``.ipynb`` files,
then rebuild. Execution uses the same settings as ``tests/test_tutorials.py`` (offline, progress
bars off, one kernel per notebook). The stored outputs carry no path of the machine that ran
them (:func:`scrub_paths`).
"""

from __future__ import annotations

import argparse
import os
import re
import site
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _own_texts import OWN_TEXTS  # noqa: E402

#: Common first code cell: offline, one thread, small inline figures.
SETUP = """\
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default models are bundled: no hub needed
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

torch.set_num_threads(1)  # small models: one thread is fastest, and kind to a shared CPU

%matplotlib inline
import matplotlib

matplotlib.rcParams["figure.dpi"] = 80  # keeps the figures (and the notebook) small
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


# ------------------------------------------------------------------------------------------------
# 01 quickstart
# ------------------------------------------------------------------------------------------------

QUICKSTART = [
    md("""
# 1. Quickstart: explain a sentence with Decoded Layer Saliency

Decoded Layer Saliency (DLS; Hou & Castanon, ICML 2023) takes gradient saliency at a hidden layer
and *decodes* it back onto the input tokens through the pre-trained language-model head. It costs
about as much as Input×Gradient (by default integrated gradients at the chosen layer, one step,
where only the blocks above that layer rerun), and picks the layer without labels.

This notebook runs offline on the bundled default SST-2 classifier (all-MiniLM-L6-v2 fine-tuned
on SST-2, with a label-free MLM head; see [docs/default_models.md](../docs/default_models.md)).
"""),
    code(SETUP),
    md("""
## Load the default model and build the explainer

`load_default("sst2")` returns a `TextClassifier` bundle: `.model` (an eval-mode
`BertForSequenceClassification`), `.tokenizer`, `.lm_head` (hidden states → vocabulary logits)
and `.labels`. `DecodedLayerSaliency.for_model` finds the candidate layers (embeddings and every
block) and attaches a `LayerCoherenceSelector` that chooses among them **once for the model**,
label-free. The default models carry that choice (fitted on unlabelled training sentences), so
the explainer runs one layer from its first call.
"""),
    code("""
from captum_layer_saliency import DecodedLayerSaliency, load_default

clf = load_default("sst2")
dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
print(clf.labels)
print(dls.layer_names)
print("layer:", dls.selection_.name)
print("chosen on:", dls.selection_.calibration)
"""),
    md("""
## Explain

`attribute` takes token ids (and the attention mask) and returns a `(batch, seq)` tensor of token
scores: positive pushes towards the explained class, negative against it; [CLS], [SEP] and padding
get 0.

`target=None` (the default) explains **the predicted class** of each example, taken from the same
forward pass and kept in `dls.last_target_`. Pass `target=` (an int, or one per example) to explain
another class, with Captum's usual semantics.
"""),
    code("""
examples = [  # (sentence, gold label), lower-cased and tokenised like SST-2
    ("it 's a charming and often affecting journey .", "positive"),  # SST-2 dev, first sentence
    ("the plot is thin and the jokes fall flat .", "negative"),
    ("the acting is superb , but the script is a lazy , predictable mess .", "negative"),
]
sentences = [s for s, _ in examples]
enc = clf.encode(sentences)
scores = dls.attribute(enc["input_ids"], attention_mask=enc["attention_mask"])
predicted = dls.last_target_.clone()  # the explained (= predicted) class of each sentence
print(scores.shape)

with torch.no_grad():
    probs = torch.softmax(clf.forward_func(enc["input_ids"], enc["attention_mask"]), dim=-1)


def tokens_of(i):
    n = int(enc["attention_mask"][i].sum())
    return clf.tokenizer.convert_ids_to_tokens(enc["input_ids"][i, :n]), scores[i, :n]


for i, text in enumerate(sentences):
    target = int(predicted[i])
    tokens, s = tokens_of(i)
    top = sorted(zip(s.tolist(), tokens), reverse=True)[:3]
    print(f"{clf.labels[target]:>8} ({probs[i, target]:.2f})  {text}")
    print("          top tokens:", ", ".join(f"{t} {v:+.3f}" for v, t in top))
print("layer used:", [dls.layer_name(k[0]) for k in dls.last_selected_])
"""),
    md("""
Every sentence was explained at the same layer, chosen once for this model (`dls.selection_`).
This is the path BENCHMARKS.md measures (§ 6): on the first 200 SST-2 *test* sentences it costs
about 0.8× the comparison's Input×Gradient from the first call, with comprehensiveness 0.398, the
same as fitting the selector yourself (the paper's grad × activation: 0.375); per-example
selection (`selection="example"`) reaches 0.388 there at 1.7× Input×Gradient. For a model of
your own, pass unlabelled in-domain texts (`for_model(..., calibration_texts=texts)`) or let the
first calls calibrate (notebook 4).

By default DLS takes integrated gradients at the selected layer, with one step from the [PAD]
baseline (`dls.last_cost_`: 2 forwards and 0.17 backwards in full-pass equivalents; the paper's
grad × activation is `layer_method="gradient"`), and the identity mapping (each position's
saliency stays on its own token); the decoded mapping is an option (`mapping="decoded"`). Each
default was chosen by measurement on tuning data (BENCHMARKS.md § 2 and § 7). Judge a method by
measured faithfulness over many sentences (notebook 3), not by a few examples.

Explaining the *other* class flips the picture:
"""),
    code("""
other = 1 - predicted  # two classes: the one not predicted
flipped = dls.attribute(enc["input_ids"], target=other, attention_mask=enc["attention_mask"])
i = 2
print("explained class:", clf.labels[int(other[i])])
n = int(enc["attention_mask"][i].sum())
print([f"{t} {v:+.3f}" for t, v in zip(tokens_of(i)[0], flipped[i, :n].tolist())])
"""),
    md("""
## Show it with Captum's `visualize_text`, made safe

Captum's `visualize_text` writes tokens and class names into HTML **unescaped**: a review containing
`<script>` would run in your notebook. `viz.safe_visualize_text` escapes every record before Captum
sees it. Captum's colours expect scores in [-1, 1], so each explanation is scaled by its largest
magnitude.
"""),
    code("""
from captum.attr import visualization

from captum_layer_saliency import viz

records = []
for i, (text, gold) in enumerate(examples):
    target = int(predicted[i])
    tokens, s = tokens_of(i)
    records.append(
        visualization.VisualizationDataRecord(
            s / s.abs().max(),  # word_attributions in [-1, 1]
            float(probs[i, target]),  # pred_prob
            clf.labels[target],  # pred_class
            gold,  # true_class
            clf.labels[target],  # attr_class (the explained class)
            float(s.sum()),  # attr_score
            tokens,  # raw_input_ids: the tokens shown
            0.0,  # convergence_score
        )
    )
_ = viz.safe_visualize_text(records)  # displays the table; returns the HTML object
"""),
    md("""
Why it matters: a token such as `<img src=x onerror=alert(1)>` is shown as text, not run.
`viz.render_html` is the library's own renderer (used by the comparison report); it escapes every
piece of text too:
"""),
    code("""
hostile = ["<img src=x onerror=alert(1)>", "great", "film"]
print(viz.escape_record(visualization.VisualizationDataRecord(
    torch.tensor([0.2, 0.9, 0.1]), 0.9, "<b>pos</b>", "pos", "pos", 1.2, hostile, 0.0
)).raw_input_ids)
print(viz.render_html(hostile, [0.2, 0.9, 0.1]))
"""),
    code("""
from IPython.display import HTML

fragments = []
for i, (text, gold) in enumerate(examples):
    tokens, s = tokens_of(i)
    fragments.append(
        viz.render_html(
            tokens[1:-1], s[1:-1],  # without [CLS] / [SEP]
            label=gold,
            prediction=clf.labels[int(predicted[i])],
            legend=i == len(examples) - 1,  # a colour legend under the last one
        )
    )
HTML("".join(fragments))
"""),
    md("""
## As a PNG

Every figure in `captum_layer_saliency.viz` returns a matplotlib `Figure` (it displays itself in a
notebook) and writes a PNG with `save=`. All of them use one diverging colour map centred on zero:
red for the explained class, blue against it, white for nothing.
"""),
    code("""
import tempfile
from pathlib import Path

out = Path(tempfile.mkdtemp(prefix="dls-quickstart-"))
tokens, s = tokens_of(2)
fig = viz.plot_token_heatmap(
    tokens, s, per_row=9,
    title=f"DLS, explained class: {clf.labels[int(predicted[2])]}",
    save=out / "quickstart.png",
)
print(f"saved quickstart.png ({(out / 'quickstart.png').stat().st_size // 1024} kB, 150 dpi)")
fig
"""),
    md("""
A standalone HTML page (with a Content-Security-Policy that forbids scripts, as a second line of
defence) is one call away:
"""),
    code("""
page = out / "explanations.html"
page.write_text(viz.html_page(fragments, title="DLS on three sentences"), encoding="utf-8")
print(f"saved {page.name} ({page.stat().st_size} bytes) in {out.parent}")
"""),
    md("""
## Next

* [02_layer_coherence.ipynb](02_layer_coherence.ipynb): every layer's saliency, and how the layer
  is chosen.
* [03_compare_with_captum.ipynb](03_compare_with_captum.ipynb): DLS next to Integrated Gradients,
  DeepLift and GradientSHAP, with faithfulness metrics.
"""),
]

# ------------------------------------------------------------------------------------------------
# 02 layer coherence
# ------------------------------------------------------------------------------------------------

COHERENCE = [
    md("""
# 2. Layer coherence: decode every layer, and choose one without labels

A layer is *coherent* when decoding its hidden states with the **pre-trained** LM head gives back
the input tokens. The paper's observation: fine-tuning erodes coherence in the last layers, and
saliency reads best where it still holds. This notebook

1. computes DLS at every candidate layer and draws the layer × token heatmap;
2. plots the coherence curve of the pre-trained encoder and of the two fine-tuned default
   classifiers;
3. compares the selector's scores and rules: which layer each one picks.
"""),
    code(SETUP),
    code("""
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
"""),
    md("""
## Every layer at once

With `selector=None`, `attribute` returns a list: one `(batch, seq)` map per candidate layer (the
embeddings, then each of the 6 blocks). The network below each layer runs once; each layer's
integrated-gradients step reruns only the blocks above it (with `layer_method="gradient"`, one
forward and one backward serve them all).
"""),
    code("""
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
"""),
    code("""
tokens = clf.tokenizer.convert_ids_to_tokens(ids[0])[1:-1]  # drop [CLS] and [SEP] (always 0)
grid = torch.stack([m[0, 1:-1] for m in maps])  # (layers, tokens)
names = ["embeddings"] + [f"block {i}" for i in range(1, len(maps))]
viz.plot_layer_token_heatmap(
    grid, tokens, names, selected=chosen,
    title=f"DLS per layer, explained class: {clf.labels[int(dls.last_target_[0])]}",
)
"""),
    md("""
Each row is scaled to ±1 (saliency magnitudes differ by orders of magnitude across layers); the
starred, outlined row is the layer the selector chose for this model. Shallow rows are noisy;
in the last block the gradient reaches only [CLS] (the pooler reads nothing else), so its
identity map is empty.
"""),
    md("""
## The coherence curve: pre-trained encoder vs fine-tuned classifiers

`LayerCoherenceSelector.fit` runs forward passes only over **unlabelled** sentences and records,
for each layer, the mean coherence over the real (non-special) tokens. The default score,
`self_recovery`, is the share of positions whose top-1 decoded token is their own input token.
We fit it on 32 SST-2 validation sentences (labels unused) for the pre-trained encoder and for the
SST-2 and AG News classifiers, always decoding with the *pre-trained* head.
"""),
    code("""
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
"""),
    code("""
viz.plot_coherence_curves(
    {label: sel.scores_ for label, sel in selectors.items()},
    layers=["emb"] + [str(i) for i in range(1, len(names))],
    selected={label: sel.selected_[0] for label, sel in selectors.items()},
    title="Coherence per layer (32 SST-2 sentences, real tokens)",
)
"""),
    md("""
The pre-trained encoder stays coherent through its last block; fine-tuning on SST-2 erodes the
late blocks most, AG News less. The stars mark the default rule's pick, `elbow`: the layer just
before the steepest fall of coherence from one layer to the next, i.e. the deepest layer before
fine-tuning stops preserving token identity; it needs no threshold. (The curves on all 872 dev
sentences are in [docs/default_models.md](../docs/default_models.md).)

Thirty-two sentences (about 400 word tokens) are too few: on the SST-2 classifier the elbow lands
on block 2 here, while the selection stored with the model, fitted on 3,615 word tokens of
unlabelled training text, picks block 5 (the last block is excluded: its word positions get no
gradient). `benchmarks/calibration_budget.py` measured how many tokens fix the choice (1,500 on
SST-2), which is why DLS calibrates on 2,000 word tokens before it freezes its layer.

## Scores and rules

Four per-position scores are available (`COHERENCE_SCORES`): `self_recovery`, `input_mass` (the
decoded probability on any of the input's tokens), `own_prob` (the probability of the position's
own token) and `neg_entropy`. The rules (`SELECTION_RULES`) turn per-layer scores into a choice:
`elbow` (the default), `deepest` (the deepest layer within `theta` of the best), `argmax`,
`weighted` (fuse every layer within `theta` of the best, weighted by score) and `fixed`. A fitted
selector keeps its scores, so re-applying a rule is free (`select`).
"""),
    code("""
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
"""),
    code("""
# The scores live on different scales (neg_entropy is negative): min-max scale them.
scaled = {s: (c - c.min()) / (c.max() - c.min()) for s, c in score_curves.items()}
viz.plot_coherence_curves(
    scaled,
    layers=["emb"] + [str(i) for i in range(1, len(names))],
    ylabel="score, min-max scaled per score",
    title="SST-2 classifier: the four coherence scores",
)
"""),
    md("""
## One fit, every rule

The explainer's selector already holds the model's per-layer scores (stored with the default
model; `dls.calibrate(texts)` or `dls.fit_selector(batches)` fit them for another model), and
`attribute` runs only the selected layer(s). A fitted selector keeps its scores, so the other
rules need no second fit: copy it and re-apply the rule. The rules on our sentence:
"""),
    code("""
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
"""),
    md("""
Next: [03_compare_with_captum.ipynb](03_compare_with_captum.ipynb) measures whether these
explanations are faithful, next to Captum's baselines.
"""),
]

# ------------------------------------------------------------------------------------------------
# 03 compare with Captum
# ------------------------------------------------------------------------------------------------

COMPARE = [
    md("""
# 3. DLS next to Captum's baselines

Integrated Gradients, DeepLift and GradientSHAP (Captum's layer versions, at the embeddings, from
a PAD baseline, as in `captum_layer_saliency.compare.methods.registry`) and DLS explain the same
SST-2 sentences.
We then measure ERASER **faithfulness**: *comprehensiveness* (how much the predicted class's
probability drops when the top tokens are deleted; higher is better) and *sufficiency* (how much it
drops when *only* the top tokens are kept; lower is better), averaged over the 1/5/10/20/50 % bins
(AOPC).

Six sentences say nothing statistically: this shows the workflow. The real numbers (hundreds of
sentences, bootstrap confidence intervals, every Captum baseline) are in
[BENCHMARKS.md](../BENCHMARKS.md).
"""),
    code(SETUP),
    code("""
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
"""),
    md("""
## Explain with every method

`get_method(name, clf, **options)` builds a method from the registry; every method has the same
call, `attribute(input_ids, attention_mask, target) -> (batch, seq)`. To keep this notebook fast,
Integrated Gradients runs **10 steps** instead of the registry's 25; GradientSHAP uses its default
5 samples. `random` is a control: a method worse than it is not explaining anything. DeepLift
warns, rightly, that Captum has no DeepLift rule for a transformer's GELU, LayerNorm and attention
softmax.
"""),
    code("""
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
"""),
    code("""
from IPython.display import HTML

i = 0
n = int(mask[i].sum())
tokens = clf.tokenizer.convert_ids_to_tokens(ids[i, 1:n - 1])
HTML("<table>" + "".join(
    f"<tr><td>{name}</td><td>{viz.render_html(tokens, s[i, 1:n - 1])}</td></tr>"
    for name, s in scores.items()
) + "</table>")
"""),
    md("""
Each row is coloured on its own scale (±its largest magnitude): the methods' raw units differ.

## Faithfulness

The metrics are pure functions of `(forward, input_ids, attention_mask, scores, target,
special_mask)` and return one value per example.
"""),
    code("""
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
"""),
    code("""
viz.plot_aopc_curves(curves, bins=[1, 5, 10, 20, 50], title="AOPC per bin (6 SST-2 sentences)")
"""),
    code("""
viz.plot_cost_vs_faithfulness(
    {r["method"]: r["ms / sentence"] / 1000 for r in table},
    {r["method"]: r["comprehensiveness ↑"] for r in table},
    title="Cost vs faithfulness (6 sentences: illustration only)",
)
"""),
    md("""
## The same, with the comparison harness

`run_comparison` does all of the above over a dataset, batch by batch: it appends rows to a JSONL
file as they finish (an interrupted run resumes), counts forward and backward passes, and writes a
report (`summary.md`, `summary.csv`, plots and an escaped `report.html`) with bootstrap confidence
intervals. The command line is `python -m captum_layer_saliency compare`. A tiny run:
"""),
    code("""
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
"""),
    md("""
Next: [04_your_own_model.ipynb](04_your_own_model.ipynb) explains a Hugging Face model of your own.
"""),
]

# ------------------------------------------------------------------------------------------------
# 04 your own model
# ------------------------------------------------------------------------------------------------

OWN_MODEL = [
    md("""
# 4. Your own Hugging Face model

DLS needs two things from a model: its hidden layers, and the **pre-trained** language-model head
of its backbone. A fine-tuned `*ForSequenceClassification` checkpoint carries no LM head, so the
head comes from the backbone it was fine-tuned from: here `textattack/bert-base-uncased-SST-2`
explained through the `bert-base-uncased` MLM head.

This part needs the Hugging Face hub (about 0.9 GB of downloads, cached afterwards). **When the hub
is unreachable (or `HF_HUB_OFFLINE=1` is set), these cells print why they skip**, and the notebook
continues on the bundled default model.
"""),
    md("""
## A hub model (skipped when offline)
"""),
    code("""
import os
import urllib.request
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import torch

torch.set_num_threads(1)

%matplotlib inline
import matplotlib

matplotlib.rcParams["figure.dpi"] = 80

MODEL = "textattack/bert-base-uncased-SST-2"
HEAD = "bert-base-uncased"


def hub_reachable(timeout=5.0):
    \"\"\"False when HF_HUB_OFFLINE is set or huggingface.co does not answer within timeout.\"\"\"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/" + HEAD, timeout=timeout)
        return True
    except OSError:
        return False


online = hub_reachable()
print("hub reachable:", online)
"""),
    code("""
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from captum_layer_saliency import DecodedLayerSaliency

hub_model = None
try:
    # Offline, only the local cache is tried: this fails at once instead of retrying for a minute.
    hub_tokenizer = AutoTokenizer.from_pretrained(MODEL, local_files_only=not online)
    hub_model = AutoModelForSequenceClassification.from_pretrained(
        MODEL, local_files_only=not online
    ).eval()
    hub_dls = DecodedLayerSaliency.for_model(hub_model, HEAD, hub_tokenizer)  # HEAD: hub name
except Exception as err:  # offline: OSError; a failed download: an HTTP or connection error
    reason = "hub unreachable, not in the local cache" if not online else "download failed"
    print(f"SKIPPED: {MODEL} with the {HEAD} head is not available "
          f"({reason}: {type(err).__name__}).")
    print("Connect to the internet (and unset HF_HUB_OFFLINE) to run this part; "
          "the rest of the notebook uses the bundled default model.")
"""),
    code("""
if hub_model is not None:
    from captum_layer_saliency import viz

    text = "a gripping , beautifully acted film ."
    enc = hub_tokenizer([text], return_tensors="pt")
    s = hub_dls.attribute(enc["input_ids"], attention_mask=enc["attention_mask"])
    print("explained class:", hub_model.config.id2label[int(hub_dls.last_target_[0])])
    print("chosen layer:", hub_dls.layer_name(hub_dls.last_selected_[0][0]))
    display(viz.plot_token_heatmap(hub_tokenizer.convert_ids_to_tokens(enc["input_ids"][0]), s[0]))
else:
    print("SKIPPED: no hub model to explain (see above).")
"""),
    md("""
`for_model(model, "bert-base-uncased", tokenizer)` loads the head with
`load_lm_head("bert-base-uncased", model=model)`, which checks that it fits the classifier (hidden
size, vocabulary) and refuses a checkpoint without a head. Supported families: BERT, RoBERTa,
DistilBERT, ALBERT (head only), ELECTRA (generator), DeBERTa-v2/v3, GPT-2 and Llama.

## The same on the default model, with explicit parts

Any model works with explicit parts: `DecodedLayerSaliency(forward_func, layers, lm_head,
selector)`, where

* `forward_func(input_ids, *args)` returns the logits;
* `layers` are the candidate modules whose outputs are `(batch, seq, hidden)` hidden states;
* `lm_head` is any module mapping hidden states to vocabulary logits.

`find_model_parts` knows where each Hugging Face family keeps its embeddings, blocks and final
norm.
"""),
    code("""
from captum_layer_saliency import LayerCoherenceSelector, find_model_parts, load_default
from captum_layer_saliency.models.classifier import special_token_ids

clf = load_default("sst2")
parts = find_model_parts(clf.model)
print(parts.family, "|", parts.layer_names)


def forward_func(input_ids, attention_mask):
    return clf.model(input_ids=input_ids, attention_mask=attention_mask).logits


explicit = DecodedLayerSaliency(
    forward_func,
    parts.layers,  # embeddings, then every block
    clf.lm_head,  # hidden states (..., 384) -> vocabulary logits (..., 30522)
    LayerCoherenceSelector(),  # borrows the explainer's head
    special_token_ids=special_token_ids(clf.tokenizer),  # [CLS], [SEP], [PAD]... get 0
    pad_token_id=clf.tokenizer.pad_token_id,  # the default layer method's [PAD] baseline
)
"""),
    md("""
A model of your own carries no layer choice yet. Give DLS unlabelled in-domain texts and it
chooses the layer label-free before the first explanation, with a progress bar (labels are never
read); `store_selection()` then keeps the choice in the model's config, so `save_pretrained`
saves it. Without texts, the first `attribute` calls calibrate on the texts you explain (2,000
word tokens), then freeze. Either way the choice is logged once, with the coherence curve; the
last block is never chosen, because the pooler reads only [CLS] and its word positions get no
gradient:
"""),
    code("""
from captum_layer_saliency.data.corpora import default_corpus

selection = explicit.calibrate(default_corpus("sst2", size=256), tokenizer=clf.tokenizer)
print(selection.name)
print(selection.curve())
"""),
    code("""
enc = clf.encode([
    "it 's a charming and often affecting journey .",
    "the plot is thin and the jokes fall flat .",
])
ids, mask = enc["input_ids"], enc["attention_mask"]
# The mask is both a forward argument and what tells DLS where the padding is.
s_explicit = explicit.attribute(ids, additional_forward_args=(mask,), attention_mask=mask)

one_liner = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
s_for_model = one_liner.attribute(ids, attention_mask=mask)
print("same scores as for_model:", torch.allclose(s_explicit, s_for_model, atol=1e-6))
print("explained classes:", [clf.labels[int(t)] for t in explicit.last_target_])
"""),
    code("""
from captum_layer_saliency import viz

n = int(mask[1].sum())
viz.plot_token_heatmap(
    clf.tokenizer.convert_ids_to_tokens(ids[1, :n]), s_explicit[1, :n], per_row=n,
    title=f"explicit parts, default SST-2 model: {clf.labels[int(explicit.last_target_[1])]}",
)
"""),
    md("""
Options work the same with either constructor, for example `aggregation="gradcam"`,
`mapping="hybrid"` or `top_k=5` (see the README), and so does choosing the layer on unlabelled
text (`calibration_texts=` or `calibrate`; per-example choice with `selection="example"`).

Next: [05_lafa.ipynb](05_lafa.ipynb), a second method that explains through similar texts.
"""),
]

# ------------------------------------------------------------------------------------------------
# 05 LAFA
# ------------------------------------------------------------------------------------------------

LAFA_NB = [
    md("""
# 5. LAFA: explanations aggregated over similar texts, beside DLS

LAFA (Locally Aggregated Feature Attribution; Zhang et al., NAACL 2022) smooths a gradient
attribution over **neighbours**: reference texts that the classifier itself finds similar. As in
the paper, by default:

1. the base saliency is SmoothGrad at the embeddings, reduced per token by the sum of squares
   over the hidden dimension (the paper's Eq. 3);
2. the neighbours are the (up to) `k=10` reference texts nearest to the input in a hidden layer of
   the **same classifier** (layer 2, mean-pooled), by L2 distance, within a cut-off `epsilon` (the
   0.39 quantile of the distances between reference texts), and of the same predicted class;
3. each token's score is `M(x)_t + lam * E(w_t)`, where `E` averages over the neighbours the
   saliencies of their occurrences of the same word (a kernel on the word embeddings), each
   neighbour's sum divided by its length; `lam=0.44`.

See [docs/lafa.md](../docs/lafa.md) for the algorithm beside this project's first variant.
Given `default_corpus("sst2")` (`captum_layer_saliency.data.corpora`), `LAFA.for_model` uses
5,000 SST-2 training sentences as its reference corpus, encoded once by the classifier and
cached. To keep this notebook fast we pass a small corpus of 300 sentences instead.
"""),
    code(SETUP),
    code("""
import random

from captum_layer_saliency import LAFA, DecodedLayerSaliency, load_default
from captum_layer_saliency.data.sst2 import load_sst2

clf = load_default("sst2")

train = [t.strip() for t in load_sst2("train")["text"]]
train = sorted({t for t in train if len(t.split()) >= 4})  # whole phrases, not fragments
references = random.Random(0).sample(train, 300)
print(len(references), "reference sentences, e.g.", references[:3])
"""),
    md("""
`LAFA.for_model(clf.model, clf.tokenizer, references)` encodes the references with the
classifier (every layer in one pass, so any layer is free afterwards) and caches the index in one
step. Here we build the index ourselves (without a progress bar) and pass it as `index=`, so the
two explainers below share it.
"""),
    code("""
from captum_layer_saliency.attr.layer_index import cached_layer_index

index = cached_layer_index(clf.model, clf.tokenizer, references, layer=2, progress=False)
lafa = LAFA.for_model(clf.model, clf.tokenizer, index=index)
print(index)
print(f"k={lafa.k}, epsilon={lafa.epsilon} (distance {index.cutoff(lafa.epsilon):.2f}), "
      f"lam={lafa.lam}, same_class={lafa.same_class}")
"""),
    md("""
## Neighbours

`attribute` explains the predicted class (`target=None`) and records the neighbours it used in
`last_neighbours_` (fewer than `k` when few reference texts lie within the cut-off).
"""),
    code("""
sentences = [
    "a gripping , beautifully acted film .",
    "the plot is thin and the jokes fall flat .",
    "an ambitious , messy , often fascinating mess of a movie .",
]
enc = clf.encode(sentences)
ids, mask = enc["input_ids"], enc["attention_mask"]
lafa_scores = lafa.attribute(ids, attention_mask=mask)
for text, t, neighbours in zip(sentences, lafa.last_target_.tolist(), lafa.last_neighbours_):
    print(f"{clf.labels[t]:>8}  {text}")
    for nb in neighbours[:4]:
        print("            ~", nb)
"""),
    md("""
## LAFA beside its base method and DLS

With `k=0` (or `lam=0`), LAFA is exactly its base method (here SmoothGrad with the sum of
squares, never negative). DLS is signed: blue tokens push against the explained class.
"""),
    code("""
from IPython.display import HTML

from captum_layer_saliency import viz

base = LAFA.for_model(clf.model, clf.tokenizer, index=index, k=0)
base_scores = base.attribute(ids, attention_mask=mask)

dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
dls_scores = dls.attribute(ids, attention_mask=mask)
assert torch.equal(dls.last_target_, lafa.last_target_)  # both explain the predicted class

table = []
for i in range(len(sentences)):
    n = int(mask[i].sum())
    tokens = clf.tokenizer.convert_ids_to_tokens(ids[i, 1:n - 1])  # without [CLS] / [SEP]
    for name, s in (("SmoothGrad (k=0)", base_scores), ("LAFA (k=10)", lafa_scores),
                    ("DLS", dls_scores)):
        table.append(f"<tr><td>{name}</td><td>{viz.render_html(tokens, s[i, 1:n - 1])}</td></tr>")
HTML("<table>" + "".join(table) + "</table>")
"""),
    md("""
## Agreement with the SST word sentiment, and cost

The paper scores LAFA by the Pearson correlation between a sentence's word attributions and the
SST word sentiments (`|leaf label - 2|`); the library has it as the metric `word_sentiment_r`
(task `sst2_words`). Three sentences are an illustration, not a measurement: the reproduction
of the paper's Table 3 on the SST-2 test sentences is in [BENCHMARKS.md](../BENCHMARKS.md).
LAFA runs its base on the input and on each neighbour it has not seen before, so it costs up to
`1 + k` times its base.
"""),
    code("""
import time

import pandas as pd

from captum_layer_saliency.data.sst_words import load_sst_word_sentiment
from captum_layer_saliency.metrics import sentiment_correlation, token_word_ids

test, match = load_sst_word_sentiment("test")
print(f"{match.matched} of {match.sentences} SST-2 test sentences match an SST tree")
rows_ = [test[i] for i in range(3)]
enc = clf.encode([r["text"] for r in rows_])
t_ids, t_mask = enc["input_ids"], enc["attention_mask"]
word_ids = torch.full(t_ids.shape, -1)
sentiment = torch.full((3, max(len(r["words"]) for r in rows_)), float("nan"))
for i, r in enumerate(rows_):
    real = t_mask[i].bool()
    word_ids[i, real] = torch.tensor(
        token_word_ids(clf.tokenizer, r["text"], r["words"], t_ids[i, real].tolist()))
    sentiment[i, : len(r["words"])] = torch.tensor(r["word_sentiment"])
rows = []
for name, explainer in (("SmoothGrad (k=0)", base), ("LAFA (k=10)", lafa), ("DLS", dls)):
    start = time.perf_counter()
    s = explainer.attribute(t_ids, attention_mask=t_mask)
    elapsed = (time.perf_counter() - start) / len(t_ids)
    r = sentiment_correlation(s, word_ids, sentiment)
    rows.append({"method": name, "word_sentiment_r (3 sentences)": r.nanmean().item(),
                 "ms / sentence": 1000 * elapsed})
pd.DataFrame(rows).set_index("method").round(3)
"""),
    md("""
In the comparison harness LAFA is registered as `lafa`: `get_method("lafa", clf, k=5, lam=1.0)`
or `python -m captum_layer_saliency compare --task sst2_words --methods dls,lafa,smoothgrad`.
"""),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_layer_coherence.ipynb": COHERENCE,
    "03_compare_with_captum.ipynb": COMPARE,
    "04_your_own_model.ipynb": OWN_MODEL,
    "05_lafa.ipynb": LAFA_NB,
    "06_your_own_texts.ipynb": [md(t) if kind == "md" else code(t) for kind, t in OWN_TEXTS],
}

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[nbformat.from_dict(dict(c)) for c in NOTEBOOKS[name]])
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execution_env() -> dict[str, str]:
    """The kernel's environment: offline, no progress bars, this interpreter first on PATH."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TQDM_DISABLE="1",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in a fresh ``python3`` kernel, with cwd = ``tutorials/``."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    env, saved = execution_env(), dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


#: An absolute path into a copy of the package (``/x/y/captum_layer_saliency/``).
PACKAGE_PATH = re.compile(r"(?<![\w.~<>-])(?:/[^\s/\"':]+)+/captum_layer_saliency/")


def _machine_paths() -> list[tuple[str, str]]:
    """(absolute path, what to show instead), longest first: the checkout, the environment,
    the home and temporary folders of the machine that runs the notebooks."""
    import tempfile as _tempfile

    places = [(str(HERE.parent), "."), (sys.prefix, "<venv>"), (sys.base_prefix, "<python>")]
    places += [(p, "<site-packages>") for p in site.getsitepackages()]
    places += [(str(Path.home()), "~"), (os.path.realpath(_tempfile.gettempdir()), "<tmp>")]
    places += [(_tempfile.gettempdir(), "<tmp>")]
    return sorted({(p, r) for p, r in places if len(p) > 1}, key=lambda pr: -len(pr[0]))


def scrub_paths(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Replace the machine's absolute paths in every output by relative or named ones.

    A warning printed as ``/home/me/checkout/captum_layer_saliency/baselines.py:181`` is stored
    as ``./captum_layer_saliency/baselines.py:181``; the temporary folder becomes ``<tmp>``.
    """
    pattern = re.compile("|".join(re.escape(p) for p, _ in _machine_paths()))
    replace = dict(_machine_paths())

    def clean(text: str) -> str:
        # Any other checkout's or environment's copy of the package: shown from the package.
        text = PACKAGE_PATH.sub("captum_layer_saliency/", text)
        return pattern.sub(lambda m: replace[m.group(0)], text)

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = clean(output["text"])
            for mime, data in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(data, str):
                    output["data"][mime] = clean(data)
            if "traceback" in output:
                output["traceback"] = [clean(line) for line in output["traceback"]]
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write without outputs")
    args = parser.parse_args()
    names = [n for n in NOTEBOOKS if not args.only or any(n.startswith(p) for p in args.only)]
    # A throw-away cache, as in the tests: LAFA's small index is rebuilt, ~/.cache is left alone.
    cache = tempfile.TemporaryDirectory(prefix="tutorial-cache-")
    os.environ["CAPTUM_LAYER_SALIENCY_CACHE"] = cache.name
    for name in names:
        nb = build(name)
        if not args.no_execute:
            start = time.perf_counter()
            scrub_paths(execute(nb))
            print(f"{name}: executed in {time.perf_counter() - start:.1f} s", flush=True)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
    cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
