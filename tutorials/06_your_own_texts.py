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
# # 6. Explain your own texts with your own model
#
# The everyday job: a fine-tuned classifier saved with `save_pretrained`, a CSV of texts, and the
# question *which words drove each prediction?* This notebook
#
# 1. saves a classifier and its pre-trained backbone to folders, as your own training would;
# 2. loads them as any user would (`--model DIR --lm-head DIR` on the command line);
# 3. explains a CSV with word-level scores, from Python and from the command line;
# 4. saves, loads, draws and renders the explanations.
#
# It runs offline in about a minute: the "own" model is the bundled SST-2 classifier, written to a
# temporary folder.

# %%
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

torch.set_num_threads(1)

# %matplotlib inline
import matplotlib

matplotlib.rcParams["figure.dpi"] = 80
warnings.filterwarnings("ignore", message="IProgress not found")

# %% [markdown]
# ## Your model, on disk
#
# DLS needs the classifier *and* the masked-LM head of the backbone it was fine-tuned from (a
# `*ForSequenceClassification` checkpoint has no LM head). Here both come from the bundled
# models; with your own, they are the folder you trained into and, say, `bert-base-uncased`.

# %%
import tempfile
from pathlib import Path

from captum_layer_saliency import load_default
from captum_layer_saliency.zoo.load import load_pretrained_encoder

work = Path(tempfile.mkdtemp(prefix="own-texts-"))
default = load_default("sst2")
default.model.save_pretrained(work / "my-classifier")
default.tokenizer.save_pretrained(work / "my-classifier")
backbone, backbone_tokenizer = load_pretrained_encoder()
backbone.save_pretrained(work / "backbone")
backbone_tokenizer.save_pretrained(work / "backbone")
sorted(p.name for p in (work / "my-classifier").iterdir())

# %% [markdown]
# ## Load it as a user would
#
# `TextClassifier` bundles the model, its tokenizer, the LM head and the label names (read from
# the model's `id2label`).

# %%
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from captum_layer_saliency import TextClassifier, load_lm_head

model = AutoModelForSequenceClassification.from_pretrained(work / "my-classifier").eval()
clf = TextClassifier(
    model=model,
    tokenizer=AutoTokenizer.from_pretrained(work / "my-classifier"),
    lm_head=load_lm_head(str(work / "backbone"), model=model),
    labels=[model.config.id2label[i] for i in range(model.config.num_labels)],
    name="my-classifier",
)
clf.labels

# %% [markdown]
# ## A CSV of your texts
#
# Any CSV, TSV or JSON Lines file with a text column will do (`--text-column` picks it).

# %%
import csv

reviews = [
    ("r1", "a gorgeous, witty, seductive movie."),
    ("r2", "the plot is nothing but boilerplate"),
    ("r3", "unflinchingly bleak and desperate, yet strangely moving"),
    ("r4", "I wanted to like it; I didn't."),
]
with (work / "my_reviews.csv").open("w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "review"])
    writer.writerows(reviews)
print((work / "my_reviews.csv").read_text())

# %% [markdown]
# ## Explain them, word by word
#
# `explain` runs one method (DLS by default, or any name from `list-methods`) and returns one
# `Explanation` per text. With `words=True` the sub-word scores are summed into the tokenizer's own
# words (`word_ids()`; special tokens dropped), so *unflinchingly*, five tokens, gets one score,
# and the word scores add up to the token scores. DLS chooses its layer once for the model,
# label-free, before the first explanation: for a model without a stored choice it calibrates on
# the texts being explained (no labels are read); `e.layer` names the layer.

# %%
from captum_layer_saliency import explain

texts = [text for _, text in reviews]
explanations = explain(clf, texts, words=True)
for e in explanations:
    print(f"{e.predicted_label:>8} (p={e.probability:.2f}) {e.text}")
    print("          for:", ", ".join(f"{w} {s:+.2f}" for w, s in e.top(3)))

# %%
e = explanations[2]
print(e.tokens[1:7], "->", e.words[0])
token_total = sum(s for s, w in zip(e.scores, e.token_words) if w >= 0)
print(f"sum of token scores {token_total:.6f} = sum of word scores {sum(e.word_scores):.6f}")
print("layer used:", e.layer)

# %% [markdown]
# ## Show one explanation
#
# One colour convention everywhere in this package: **red = evidence for the explained class,
# blue = against it** (a diverging map centred on zero, limits ±max|score| per explanation).
# `plot()` draws a heatmap (pass `save="x.png"` for a file), `to_html()` an escaped HTML fragment.

# %%
explanations[0].plot()

# %%
from IPython.display import HTML

HTML(explanations[3].to_html(legend=True))

# %% [markdown]
# Captum's own `visualize_text` takes an eight-field `VisualizationDataRecord`;
# `to_visualization_record()` fills it (scores scaled into [-1, 1], the class names, the total
# attribution). Render it with `safe_visualize_text`, which escapes the text. Note that Captum
# colours the other way round: **green = for, red = against**.

# %%
from captum_layer_saliency.viz import safe_visualize_text

safe_visualize_text([e.to_visualization_record() for e in explanations[:2]]);

# %% [markdown]
# ## Save and load
#
# The JSON Lines schema is the command line's (`explanations.jsonl`): text, tokens, words, scores,
# prediction and probability, explained target, method, layer, model and version.

# %%
from captum_layer_saliency import load_explanations, save_explanations

path = save_explanations(work / "explanations.jsonl", explanations)
assert load_explanations(path) == explanations
print(path.name, path.stat().st_size, "bytes,", len(load_explanations(path)), "explanations")

# %% [markdown]
# ## The same from the command line
#
# `captum-layer-saliency explain` (or `python -m captum_layer_saliency explain`) takes texts as
# arguments or `--input FILE`, prints the top words, and with `--out` writes
# `explanations.jsonl`, an escaped `explanations.html` and, with `--png`, one PNG per text. Rerun
# the same command after an interruption to resume. `--target` explains another class (an index
# or a name), `--method` another method.

# %%
import subprocess
import sys

command = [
    sys.executable, "-m", "captum_layer_saliency", "explain",
    "--model", "my-classifier", "--lm-head", "backbone",
    "--input", "my_reviews.csv", "--text-column", "review", "--id-column", "id",
    "--words", "--out", "out", "--png", "--top", "3", "--no-progress",
]  # fmt: skip
done = subprocess.run(command, cwd=work, capture_output=True, text=True)
print(done.stdout or done.stderr)
sorted(str(p.relative_to(work / "out")) for p in (work / "out").rglob("*.*"))

# %%
import shutil

shutil.rmtree(work)  # the temporary model copies
