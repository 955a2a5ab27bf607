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
# # 4. Your own Hugging Face model
#
# DLS needs two things from a model: its hidden layers, and the **pre-trained** language-model head
# of its backbone. A fine-tuned `*ForSequenceClassification` checkpoint carries no LM head, so the
# head comes from the backbone it was fine-tuned from: here `textattack/bert-base-uncased-SST-2`
# explained through the `bert-base-uncased` MLM head.
#
# This part needs the Hugging Face hub (about 0.9 GB of downloads, cached afterwards). **When the hub
# is unreachable (or `HF_HUB_OFFLINE=1` is set), these cells print why they skip**, and the notebook
# continues on the bundled default model.

# %% [markdown]
# ## A hub model (skipped when offline)

# %%
import os
import urllib.request
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import torch

torch.set_num_threads(1)

# %matplotlib inline
import matplotlib

matplotlib.rcParams["figure.dpi"] = 80

MODEL = "textattack/bert-base-uncased-SST-2"
HEAD = "bert-base-uncased"


def hub_reachable(timeout=5.0):
    """False when HF_HUB_OFFLINE is set or huggingface.co does not answer within timeout."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/" + HEAD, timeout=timeout)
        return True
    except OSError:
        return False


online = hub_reachable()
print("hub reachable:", online)

# %%
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

# %%
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

# %% [markdown]
# `for_model(model, "bert-base-uncased", tokenizer)` loads the head with
# `load_lm_head("bert-base-uncased", model=model)`, which checks that it fits the classifier (hidden
# size, vocabulary) and refuses a checkpoint without a head. Supported families: BERT, RoBERTa,
# DistilBERT, ALBERT (head only), ELECTRA (generator), DeBERTa-v2/v3, GPT-2 and Llama.
#
# ## The same on the default model, with explicit parts
#
# Any model works with explicit parts: `DecodedLayerSaliency(forward_func, layers, lm_head,
# selector)`, where
#
# * `forward_func(input_ids, *args)` returns the logits;
# * `layers` are the candidate modules whose outputs are `(batch, seq, hidden)` hidden states;
# * `lm_head` is any module mapping hidden states to vocabulary logits.
#
# `find_model_parts` knows where each Hugging Face family keeps its embeddings, blocks and final
# norm.

# %%
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

# %% [markdown]
# A model of your own carries no layer choice yet. Give DLS unlabelled in-domain texts and it
# chooses the layer label-free before the first explanation, with a progress bar (labels are never
# read); `store_selection()` then keeps the choice in the model's config, so `save_pretrained`
# saves it. Without texts, the first `attribute` calls calibrate on the texts you explain (2,000
# word tokens), then freeze. Either way the choice is logged once, with the coherence curve; the
# last block is never chosen, because the pooler reads only [CLS] and its word positions get no
# gradient:

# %%
from captum_layer_saliency.data.corpora import default_corpus

selection = explicit.calibrate(default_corpus("sst2", size=256), tokenizer=clf.tokenizer)
print(selection.name)
print(selection.curve())

# %%
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

# %%
from captum_layer_saliency import viz

n = int(mask[1].sum())
viz.plot_token_heatmap(
    clf.tokenizer.convert_ids_to_tokens(ids[1, :n]), s_explicit[1, :n], per_row=n,
    title=f"explicit parts, default SST-2 model: {clf.labels[int(explicit.last_target_[1])]}",
)

# %% [markdown]
# Options work the same with either constructor, for example `aggregation="gradcam"`,
# `mapping="hybrid"` or `top_k=5` (see the README), and so does choosing the layer on unlabelled
# text (`calibration_texts=` or `calibrate`; per-example choice with `selection="example"`).
#
# Next: [05_lafa.ipynb](05_lafa.ipynb), a second method that explains through similar texts.
