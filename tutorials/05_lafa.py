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
# # 5. LAFA: explanations aggregated over similar texts, beside DLS
#
# LAFA (Locally Aggregated Feature Attribution; Zhang et al., NAACL 2022) smooths a gradient
# attribution over **neighbours**: reference texts that the classifier itself finds similar. As in
# the paper, by default:
#
# 1. the base saliency is SmoothGrad at the embeddings, reduced per token by the sum of squares
#    over the hidden dimension (the paper's Eq. 3);
# 2. the neighbours are the (up to) `k=10` reference texts nearest to the input in a hidden layer of
#    the **same classifier** (layer 2, mean-pooled), by L2 distance, within a cut-off `epsilon` (the
#    0.39 quantile of the distances between reference texts), and of the same predicted class;
# 3. each token's score is `M(x)_t + lam * E(w_t)`, where `E` averages over the neighbours the
#    saliencies of their occurrences of the same word (a kernel on the word embeddings), each
#    neighbour's sum divided by its length; `lam=0.44`.
#
# See [docs/lafa.md](../docs/lafa.md) for the algorithm beside this project's first variant.
# Given `default_corpus("sst2")` (`captum_layer_saliency.data.corpora`), `LAFA.for_model` uses
# 5,000 SST-2 training sentences as its reference corpus, encoded once by the classifier and
# cached. To keep this notebook fast we pass a small corpus of 300 sentences instead.

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
import random

from captum_layer_saliency import LAFA, DecodedLayerSaliency, load_default
from captum_layer_saliency.data.sst2 import load_sst2

clf = load_default("sst2")

train = [t.strip() for t in load_sst2("train")["text"]]
train = sorted({t for t in train if len(t.split()) >= 4})  # whole phrases, not fragments
references = random.Random(0).sample(train, 300)
print(len(references), "reference sentences, e.g.", references[:3])

# %% [markdown]
# `LAFA.for_model(clf.model, clf.tokenizer, references)` encodes the references with the
# classifier (every layer in one pass, so any layer is free afterwards) and caches the index in one
# step. Here we build the index ourselves (without a progress bar) and pass it as `index=`, so the
# two explainers below share it.

# %%
from captum_layer_saliency.attr.layer_index import cached_layer_index

index = cached_layer_index(clf.model, clf.tokenizer, references, layer=2, progress=False)
lafa = LAFA.for_model(clf.model, clf.tokenizer, index=index)
print(index)
print(f"k={lafa.k}, epsilon={lafa.epsilon} (distance {index.cutoff(lafa.epsilon):.2f}), "
      f"lam={lafa.lam}, same_class={lafa.same_class}")

# %% [markdown]
# ## Neighbours
#
# `attribute` explains the predicted class (`target=None`) and records the neighbours it used in
# `last_neighbours_` (fewer than `k` when few reference texts lie within the cut-off).

# %%
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

# %% [markdown]
# ## LAFA beside its base method and DLS
#
# With `k=0` (or `lam=0`), LAFA is exactly its base method (here SmoothGrad with the sum of
# squares, never negative). DLS is signed: blue tokens push against the explained class.

# %%
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

# %% [markdown]
# ## Agreement with the SST word sentiment, and cost
#
# The paper scores LAFA by the Pearson correlation between a sentence's word attributions and the
# SST word sentiments (`|leaf label - 2|`); the library has it as the metric `word_sentiment_r`
# (task `sst2_words`). Three sentences are an illustration, not a measurement: the reproduction
# of the paper's Table 3 on the SST-2 test sentences is in [BENCHMARKS.md](../BENCHMARKS.md).
# LAFA runs its base on the input and on each neighbour it has not seen before, so it costs up to
# `1 + k` times its base.

# %%
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

# %% [markdown]
# In the comparison harness LAFA is registered as `lafa`: `get_method("lafa", clf, k=5, lam=1.0)`
# or `python -m captum_layer_saliency compare --task sst2_words --methods dls,lafa,smoothgrad`.
