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
# # 1. Quickstart: explain a sentence with Decoded Layer Saliency
#
# Decoded Layer Saliency (DLS; Hou & Castanon, ICML 2023) takes gradient saliency at a hidden layer
# and *decodes* it back onto the input tokens through the pre-trained language-model head. It costs
# about as much as Input×Gradient (by default integrated gradients at the chosen layer, one step,
# where only the blocks above that layer rerun), and picks the layer without labels.
#
# This notebook runs offline on the bundled default SST-2 classifier (all-MiniLM-L6-v2 fine-tuned
# on SST-2, with a label-free MLM head; see [docs/default_models.md](../docs/default_models.md)).

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

# %% [markdown]
# ## Load the default model and build the explainer
#
# `load_default("sst2")` returns a `TextClassifier` bundle: `.model` (an eval-mode
# `BertForSequenceClassification`), `.tokenizer`, `.lm_head` (hidden states → vocabulary logits)
# and `.labels`. `DecodedLayerSaliency.for_model` finds the candidate layers (embeddings and every
# block) and attaches a `LayerCoherenceSelector` that chooses among them **once for the model**,
# label-free. The default models carry that choice (fitted on unlabelled training sentences), so
# the explainer runs one layer from its first call.

# %%
from captum_layer_saliency import DecodedLayerSaliency, load_default

clf = load_default("sst2")
dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
print(clf.labels)
print(dls.layer_names)
print("layer:", dls.selection_.name)
print("chosen on:", dls.selection_.calibration)

# %% [markdown]
# ## Explain
#
# `attribute` takes token ids (and the attention mask) and returns a `(batch, seq)` tensor of token
# scores: positive pushes towards the explained class, negative against it; [CLS], [SEP] and padding
# get 0.
#
# `target=None` (the default) explains **the predicted class** of each example, taken from the same
# forward pass and kept in `dls.last_target_`. Pass `target=` (an int, or one per example) to explain
# another class, with Captum's usual semantics.

# %%
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

# %% [markdown]
# Every sentence was explained at the same layer, chosen once for this model (`dls.selection_`).
# This is the path BENCHMARKS.md measures (§ 6): on the first 200 SST-2 *test* sentences it costs
# about 0.8× the comparison's Input×Gradient from the first call, with comprehensiveness 0.398, the
# same as fitting the selector yourself (the paper's grad × activation: 0.375); per-example
# selection (`selection="example"`) reaches 0.388 there at 1.7× Input×Gradient. For a model of
# your own, pass unlabelled in-domain texts (`for_model(..., calibration_texts=texts)`) or let the
# first calls calibrate (notebook 4).
#
# By default DLS takes integrated gradients at the selected layer, with one step from the [PAD]
# baseline (`dls.last_cost_`: 2 forwards and 0.17 backwards in full-pass equivalents; the paper's
# grad × activation is `layer_method="gradient"`), and the identity mapping (each position's
# saliency stays on its own token); the decoded mapping is an option (`mapping="decoded"`). Each
# default was chosen by measurement on tuning data (BENCHMARKS.md § 2 and § 7). Judge a method by
# measured faithfulness over many sentences (notebook 3), not by a few examples.
#
# Explaining the *other* class flips the picture:

# %%
other = 1 - predicted  # two classes: the one not predicted
flipped = dls.attribute(enc["input_ids"], target=other, attention_mask=enc["attention_mask"])
i = 2
print("explained class:", clf.labels[int(other[i])])
n = int(enc["attention_mask"][i].sum())
print([f"{t} {v:+.3f}" for t, v in zip(tokens_of(i)[0], flipped[i, :n].tolist())])

# %% [markdown]
# ## Show it with Captum's `visualize_text`, made safe
#
# Captum's `visualize_text` writes tokens and class names into HTML **unescaped**: a review containing
# `<script>` would run in your notebook. `viz.safe_visualize_text` escapes every record before Captum
# sees it. Captum's colours expect scores in [-1, 1], so each explanation is scaled by its largest
# magnitude.

# %%
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

# %% [markdown]
# Why it matters: a token such as `<img src=x onerror=alert(1)>` is shown as text, not run.
# `viz.render_html` is the library's own renderer (used by the comparison report); it escapes every
# piece of text too:

# %%
hostile = ["<img src=x onerror=alert(1)>", "great", "film"]
print(viz.escape_record(visualization.VisualizationDataRecord(
    torch.tensor([0.2, 0.9, 0.1]), 0.9, "<b>pos</b>", "pos", "pos", 1.2, hostile, 0.0
)).raw_input_ids)
print(viz.render_html(hostile, [0.2, 0.9, 0.1]))

# %%
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

# %% [markdown]
# ## As a PNG
#
# Every figure in `captum_layer_saliency.viz` returns a matplotlib `Figure` (it displays itself in a
# notebook) and writes a PNG with `save=`. All of them use one diverging colour map centred on zero:
# red for the explained class, blue against it, white for nothing.

# %%
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

# %% [markdown]
# A standalone HTML page (with a Content-Security-Policy that forbids scripts, as a second line of
# defence) is one call away:

# %%
page = out / "explanations.html"
page.write_text(viz.html_page(fragments, title="DLS on three sentences"), encoding="utf-8")
print(f"saved {page.name} ({page.stat().st_size} bytes) in {out.parent}")

# %% [markdown]
# ## Next
#
# * [02_layer_coherence.ipynb](02_layer_coherence.ipynb): every layer's saliency, and how the layer
#   is chosen.
# * [03_compare_with_captum.ipynb](03_compare_with_captum.ipynb): DLS next to Integrated Gradients,
#   DeepLift and GradientSHAP, with faithfulness metrics.
