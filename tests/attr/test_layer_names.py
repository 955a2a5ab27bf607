"""One naming scheme for DLS's layers, however they were given: an index, a module of
``find_model_parts(model).layers`` (to ``for_model`` or the bare constructor), whatever the
forward; in ``layer_names``, ``layer_name``, ``last_selected_``, the selection record and
:func:`~captum_layer_saliency.explain`'s output. Other modules keep a generic name."""

from __future__ import annotations

import functools

import pytest
import torch
import transformers as T
from tiny_models import CAUSAL, ToyClassifier, family_configs, toy_head
from torch import nn

from captum_layer_saliency import DecodedLayerSaliency, LayerCoherenceSelector, explain
from captum_layer_saliency.compare.methods.ours import ExplainerAttributor
from captum_layer_saliency.models.classifier import TextClassifier, classifier_forward
from captum_layer_saliency.models.surgery import find_model_parts

FAMILIES = ["bert", "gpt2"]  # an encoder and a decoder (different module paths)
PATHS = {
    "bert": ["bert.embeddings", "bert.encoder.layer.1"],
    "gpt2": ["transformer.drop", "transformer.h.1"],
}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> tuple[str, nn.Module, nn.Module]:
    """``(family, classifier, its head)`` for a tiny random model of the family."""
    name = request.param
    config = family_configs()[name]
    config.num_labels = 2
    config.pad_token_id = 0
    torch.manual_seed(0)
    clf = T.AutoModelForSequenceClassification.from_config(config).eval()
    lm = (T.AutoModelForCausalLM if name in CAUSAL else T.AutoModelForMaskedLM).from_config(config)
    head = DecodedLayerSaliency.for_model(clf, lm, layers=0, selector=None).lm_head
    return name, clf, head


def _ways(clf: nn.Module, head: nn.Module, pick: list[int]) -> dict[str, DecodedLayerSaliency]:
    """The same layers given in every way a user can give them."""
    parts = find_model_parts(clf)
    modules = [parts.layers[i] for i in pick]
    fwd = classifier_forward(clf)
    return {
        "index": DecodedLayerSaliency.for_model(clf, head, layers=pick, selector=None),
        "module": DecodedLayerSaliency.for_model(clf, head, layers=modules, selector=None),
        "bare model": DecodedLayerSaliency(clf, modules, head),
        "bare classifier_forward": DecodedLayerSaliency(fwd, modules, head),
        "bare bound method": DecodedLayerSaliency(clf.forward, modules, head),
        "bare lambda": DecodedLayerSaliency(lambda ids, m=None: clf(ids, m).logits, modules, head),
        "bare partial": DecodedLayerSaliency(functools.partial(fwd), modules, head),
    }


def test_every_way_of_giving_the_layers_names_them_alike(family) -> None:
    name, clf, head = family
    for way, dls in _ways(clf, head, [0, 2]).items():
        assert dls.layer_indices == [0, 2], way
        assert dls.layer_names == ["embeddings", "block 2"], way
        assert dls.layer_paths == PATHS[name], way
        assert dls.layer_name(2) == f"block 2 ({PATHS[name][1]})", way
    for way, dls in _ways(clf, head, [2]).items():
        assert (dls.layer_indices, dls.layer_names) == ([2], ["block 2"]), way
    parts = find_model_parts(clf)
    single = DecodedLayerSaliency(clf, parts.layers[1], head)
    assert (single.layer_indices, single.layer_names) == ([1], ["block 1"])
    every = DecodedLayerSaliency(classifier_forward(clf), parts.layers, head)
    assert every.layer_names == parts.layer_names == ["embeddings", "block 1", "block 2"]


@pytest.mark.filterwarnings("ignore:the LM head decodes")  # a random head: any choice will do
def test_selections_and_records_use_the_scheme(family) -> None:
    _, clf, head = family
    parts = find_model_parts(clf)
    ids = torch.tensor([[5, 10, 11, 12, 13, 6], [5, 20, 21, 22, 6, 0]])
    mask = (ids != 0).long()
    candidates = [parts.layers[1], parts.layers[2]]
    # Per example: last_selected_ holds layer indices of the scheme, named by layer_name.
    per_example = DecodedLayerSaliency(
        classifier_forward(clf),
        candidates,
        head,
        LayerCoherenceSelector(head),
        selection="example",
        special_token_ids=[0, 5, 6],
        pad_token_id=0,
    )
    per_example.attribute(ids, attention_mask=mask)
    assert per_example.last_selected_ is not None
    assert all(i in (1, 2) for row in per_example.last_selected_ for i in row)
    assert per_example.layer_name(1).startswith("block 1 (")
    # Per model: the stored record names the candidates and the chosen one in the scheme.
    per_model = DecodedLayerSaliency(
        classifier_forward(clf),
        candidates,
        head,
        LayerCoherenceSelector(head),
        special_token_ids=[0, 5, 6],
        pad_token_id=0,
    )
    per_model.fit_selector([(ids, mask)])
    record = per_model.selection_
    assert record is not None
    assert record.layer_indices == [1, 2] and record.layer_names == ["block 1", "block 2"]
    assert record.name.startswith(f"block {record.layer} (")
    assert record.to_dict()["layer_names"] == ["block 1", "block 2"]


def test_explain_names_the_layer_alike(tiny_classifier: TextClassifier) -> None:
    clf = tiny_classifier
    assert clf.lm_head is not None
    block = find_model_parts(clf.model).layers[2]
    ways = {
        "index": DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer, layers=2),
        "module": DecodedLayerSaliency.for_model(
            clf.model, clf.lm_head, clf.tokenizer, layers=block
        ),
        "bare": DecodedLayerSaliency(
            classifier_forward(clf.model),
            block,
            clf.lm_head,
            pad_token_id=clf.tokenizer.pad_token_id,
        ),
    }
    for way, dls in ways.items():
        (out,) = explain(clf, "a good film", attributor=ExplainerAttributor(clf, dls))
        assert out.layer == "block 2", way


def test_other_modules_keep_a_generic_name_that_says_what_they_are(family) -> None:
    name, clf, head = family
    parts = find_model_parts(clf)
    inner = parts.blocks[0].output if name == "bert" else parts.blocks[0].mlp
    path = {"bert": "bert.encoder.layer.0.output", "gpt2": "transformer.h.0.mlp"}[name]
    dls = DecodedLayerSaliency(clf, [inner, parts.layers[2]], head)
    assert dls.layer_names == [path, "block 2"]
    assert dls.layer_indices == [0, 1]  # positions: an index must name one layer
    assert dls.layer_name(0) == path  # the path is not repeated
    # A model of no known family: module paths.
    toy = ToyClassifier()
    assert DecodedLayerSaliency(toy, toy.emb, toy_head()).layer_names == ["emb"]
    # A forward behind which no model can be found: the class and the position.
    anonymous = DecodedLayerSaliency(lambda ids, m=None: ids.float(), toy.emb, toy_head())
    assert anonymous.layer_names == ["Embedding (candidate 0)"]
