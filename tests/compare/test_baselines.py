"""The baseline registry: each method's contract, and Captum wiring against hand computations."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from conftest import tiny_bert_config
from transformers import BertForSequenceClassification

from captum_layer_saliency.attr.attributor import pad_baseline
from captum_layer_saliency.compare.methods import gradient, ours
from captum_layer_saliency.compare.methods import registry as B
from captum_layer_saliency.compare.methods.attention import RandomAttributor
from captum_layer_saliency.compare.methods.perturbation import token_feature_mask
from captum_layer_saliency.compare.methods.registry import METHOD_KINDS
from captum_layer_saliency.data import corpora
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.surgery import embedding_layer

BUILTIN = [name for name in B.available_methods() if not name.startswith("dls") and name != "lafa"]


def _logit(clf: TextClassifier, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor):
    with torch.no_grad():
        logits = clf.forward_func(ids, mask)
    return logits.gather(-1, target.reshape(-1, 1)).squeeze(-1)


@pytest.fixture(scope="module")
def all_scores(tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]):
    """Every built-in method's scores on the tiny batch (computed once; the slow part)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DeepLift on", category=UserWarning)
        return {
            name: B.get_method(name, tiny_classifier).attribute(
                tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
            )
            for name in BUILTIN
        }


def test_registry_lists_every_issue_method() -> None:
    expected = {
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
        "deeplift",
        "deeplift_shap",
        "gradient_shap",
        "occlusion",
        "lime",
        "shapley_sampling",
        "kernel_shap",
        "attention_cls",
        "attention_rollout",
        "random",
        "dls",
        "decompx",
        "loo",
    }
    assert expected <= set(B.available_methods())
    assert B.resolve_method_name("leave-one-out") == "loo"
    for spec in B.METHODS.values():
        assert spec.kind in METHOD_KINDS
        assert spec.description
    assert "GELU" in B.METHODS["deeplift"].notes and "LayerNorm" in B.METHODS["deeplift"].notes


@pytest.mark.parametrize("name", BUILTIN)
def test_method_contract(
    name: str,
    all_scores: dict[str, torch.Tensor],
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
) -> None:
    scores = all_scores[name]
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    assert scores.shape == ids.shape
    assert scores.dtype == torch.float32 and not scores.requires_grad
    assert torch.isfinite(scores).all()
    invalid = ~mask.bool() | tiny_classifier.special_mask(ids)
    assert (scores[invalid] == 0).all()
    assert scores[~invalid].abs().sum() > 0, f"{name} gave all-zero scores"


@pytest.mark.parametrize("name", BUILTIN)
def test_seeded_rerun_is_identical(
    name: str,
    all_scores: dict[str, torch.Tensor],
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
) -> None:
    torch.manual_seed(123)  # the global state must not matter
    again = B.get_method(name, tiny_classifier).attribute(
        tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    )
    assert torch.equal(again, all_scores[name])


def test_seed_option_changes_stochastic_methods_and_restores_global_rng(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    all_scores: dict[str, torch.Tensor],
) -> None:
    args = (tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"])
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    other = B.get_method("gradient_shap", tiny_classifier, seed=1).attribute(*args)
    assert torch.equal(torch.rand(1), expected_next), "the global torch RNG was disturbed"
    assert not torch.equal(other, all_scores["gradient_shap"])
    assert not torch.equal(
        B.get_method("random", tiny_classifier, seed=1).attribute(*args), all_scores["random"]
    )


def test_pad_baseline_keeps_specials_and_padding() -> None:
    ids = torch.tensor([[2, 7, 8, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    special = torch.tensor([[True, False, False, True, True]])
    assert pad_baseline(ids, mask, special, 0).tolist() == [[2, 0, 0, 3, 0]]


def test_token_feature_mask_numbers_valid_tokens() -> None:
    valid = torch.tensor([[False, True, True, False], [False, True, False, False]])
    assert token_feature_mask(valid).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]


def test_integrated_gradients_completeness(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    """Scores sum to f(x) - f(PAD baseline) for the target logit (specials sit in both)."""
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    scores = B.get_method("ig", tiny_classifier, n_steps=100).attribute(ids, mask, target)
    baseline = pad_baseline(ids, mask, tiny_classifier.special_mask(ids), 0)
    expected = _logit(tiny_classifier, ids, mask, target) - _logit(
        tiny_classifier, baseline, mask, target
    )
    # Special tokens' embeddings are equal in x and the baseline, so they carry no attribution.
    torch.testing.assert_close(scores.sum(-1), expected, atol=2e-2, rtol=2e-2)


def test_occlusion_window_one_is_the_pad_replacement_drop(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    scores = B.get_method("occlusion", tiny_classifier, window=1).attribute(ids, mask, target)
    full = _logit(tiny_classifier, ids, mask, target)
    b, i = 0, 2
    replaced = ids.clone()
    replaced[b, i] = 0
    expected = full[b] - _logit(tiny_classifier, replaced, mask, target)[b]
    torch.testing.assert_close(scores[b, i], expected, atol=1e-5, rtol=1e-5)


def test_shapley_sampling_is_efficient(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    all_scores: dict[str, torch.Tensor],
) -> None:
    """Permutation sampling sums exactly to f(x) - f(baseline), so grouping the specials with
    the first token changes nothing."""
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    baseline = pad_baseline(ids, mask, tiny_classifier.special_mask(ids), 0)
    expected = _logit(tiny_classifier, ids, mask, target) - _logit(
        tiny_classifier, baseline, mask, target
    )
    torch.testing.assert_close(
        all_scores["shapley_sampling"].sum(-1), expected, atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(
    "name", ["integrated_gradients", "input_x_gradient", "saliency", "deeplift", "occlusion"]
)
def test_padding_does_not_change_scores(
    name: str,
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    all_scores: dict[str, torch.Tensor],
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    n = int(mask[1].sum())
    alone = B.get_method(name, tiny_classifier).attribute(ids[1:2, :n], mask[1:2, :n], target[1:2])
    torch.testing.assert_close(alone[0], all_scores[name][1, :n], atol=1e-4, rtol=1e-4)


STOCHASTIC = ["gradient_shap", "lime", "kernel_shap", "shapley_sampling", "random", "occlusion"]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_per_example_methods_do_not_depend_on_the_batch(
    name: str,
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    all_scores: dict[str, torch.Tensor],
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    # The last example alone, and the batch in reverse order.
    alone = B.get_method(name, tiny_classifier).attribute(ids[2:], mask[2:], target[2:])
    assert torch.equal(alone[0], all_scores[name][2])
    flipped = B.get_method(name, tiny_classifier).attribute(
        ids.flip(0), mask.flip(0), target.flip(0)
    )
    assert torch.equal(flipped.flip(0), all_scores[name])


def test_attention_cls_matches_the_model_attentions(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    all_scores: dict[str, torch.Tensor],
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    with torch.no_grad():
        out = tiny_classifier.model(input_ids=ids, attention_mask=mask, output_attentions=True)
    expected = out.attentions[-1].mean(1)[:, 0, :]
    valid = mask.bool() & ~tiny_classifier.special_mask(ids)
    torch.testing.assert_close(all_scores["attention_cls"][valid], expected[valid])


def test_attention_methods_switch_sdpa_models_to_eager_and_back(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    config = tiny_bert_config()
    config._attn_implementation = "sdpa"
    model = BertForSequenceClassification(config).eval()
    clf = TextClassifier(model=model, tokenizer=tiny_classifier.tokenizer)
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    for name in ("attention_cls", "attention_rollout"):
        scores = B.get_method(name, clf).attribute(ids, mask, target)
        assert torch.isfinite(scores).all() and scores.abs().sum() > 0
    assert model.config._attn_implementation == "sdpa"


def test_gradient_methods_work_under_no_grad(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    all_scores: dict[str, torch.Tensor],
) -> None:
    with torch.no_grad():
        scores = B.get_method("ixg", tiny_classifier).attribute(
            tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
        )
    assert torch.equal(scores, all_scores["input_x_gradient"])


def test_saliency_l1_option_and_integer_target(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    l1 = B.get_method("saliency", tiny_classifier, norm="l1").attribute(ids, mask, torch.tensor(1))
    l2 = B.get_method("saliency", tiny_classifier).attribute(ids, mask, torch.ones(3).long())
    assert (l1 >= l2 - 1e-6).all() and (l1 >= 0).all()  # ||g||_1 >= ||g||_2


def test_aliases_and_name_normalisation() -> None:
    assert B.resolve_method_name("IG") == "integrated_gradients"
    assert B.resolve_method_name("ixg") == "input_x_gradient"
    assert B.resolve_method_name("gshap") == "gradient_shap"
    assert B.resolve_method_name("Kernel-SHAP") == "kernel_shap"
    assert B.resolve_method_name("dls_layer3") == "dls_layer3"
    for alias, target in B.ALIASES.items():
        assert target in B.METHODS, alias


def test_unknown_method_lists_valid_names_and_suggests(tiny_classifier: TextClassifier) -> None:
    with pytest.raises(ValueError, match="integrated_gradients") as err:
        B.get_method("integrated_gradient", tiny_classifier)
    assert "Did you mean" in str(err.value) and "saliency" in str(err.value)


def test_unknown_option_is_a_clear_error(tiny_classifier: TextClassifier) -> None:
    with pytest.raises(ValueError, match="n_steps"):
        B.get_method("ig", tiny_classifier, n_stesp=3)


def test_register_method_rejects_bad_kind() -> None:
    spec = B.MethodSpec("x", "x", RandomAttributor, kind="magic")
    with pytest.raises(ValueError, match="kind"):
        B.register_method(spec)


def test_deeplift_warns_once(
    tiny_classifier: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gradient, "_WARNED", set())
    with pytest.warns(UserWarning, match="GELUActivation.*LayerNorm"):
        B.get_method("deeplift", tiny_classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        B.get_method("deeplift_shap", tiny_classifier)


def test_pass_counter_counts_rows(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    with B.PassCounter(tiny_classifier.model) as counter:
        B.get_method("ixg", tiny_classifier).attribute(ids, mask, target)
    assert (counter.forwards, counter.backwards) == (3, 3)
    assert counter.per_example(3) == {"forwards": 1.0, "backwards": 1.0}
    with B.PassCounter(tiny_classifier.model) as counter:
        B.get_method("ig", tiny_classifier, n_steps=4).attribute(ids, mask, target)
    # 4 interpolation points per example, plus Captum's passes over x and the baseline.
    assert counter.backwards == 3 * 4 and counter.forwards == 3 * 4 + 2 * 3
    # The hook is gone after the block.
    tiny_classifier.forward_func(ids, mask)
    assert counter.forwards == 18


def test_embedding_layer(tiny_classifier: TextClassifier) -> None:
    model: Any = tiny_classifier.model
    assert embedding_layer(model) is model.bert.embeddings
    assert embedding_layer(model, "word_embeddings") is model.bert.embeddings.word_embeddings


class _FakeDLS:
    """Stands in for DecodedLayerSaliency to check the factory's wiring."""

    calls: list[dict[str, Any]] = []

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def for_model(
        cls, model: Any, lm_head: Any, tokenizer: Any = None, layers: Any = None, **options: Any
    ) -> _FakeDLS:
        cls.calls.append({"layers": layers, "lm_head": lm_head, **options})
        return cls(model)

    def attribute(
        self,
        input_ids: torch.Tensor,
        target: Any = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return torch.ones(input_ids.shape)


def test_dls_factory_wiring_with_a_stand_in(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ours, "DecodedLayerSaliency", _FakeDLS)
    _FakeDLS.calls.clear()
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]

    scores = B.get_method("dls_layer1", tiny_classifier).attribute(ids, mask, target)
    model: Any = tiny_classifier.model
    block_1 = model.bert.encoder.layer[0]
    assert _FakeDLS.calls[-1]["layers"] is block_1
    assert _FakeDLS.calls[-1]["lm_head"] is tiny_classifier.lm_head
    valid = mask.bool() & ~tiny_classifier.special_mask(ids)
    assert torch.equal(scores, valid.float())  # specials and padding zeroed

    B.get_method("dls", tiny_classifier, tau=2.0)
    assert _FakeDLS.calls[-1]["layers"] is None and _FakeDLS.calls[-1]["tau"] == 2.0
    with pytest.raises(ValueError, match="layers 0..2"):
        B.get_method("dls_layer3", tiny_classifier)


def test_register_dls_layers(
    tiny_classifier: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(B, "METHODS", dict(B.METHODS))
    assert B.register_dls_layers(tiny_classifier.model) == [
        "dls_layer0",
        "dls_layer1",
        "dls_layer2",
    ]
    assert {"dls_layer0", "dls_layer2"} <= set(B.available_methods())


@pytest.mark.parametrize("name", ["dls", "dls_layer0", "dls_layer2"])
def test_real_dls_contract(
    name: str, tiny_classifier: TextClassifier, tiny_batch: dict[str, torch.Tensor]
) -> None:
    ids, mask, target = tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    scores = B.get_method(name, tiny_classifier).attribute(ids, mask, target)
    assert scores.shape == ids.shape and torch.isfinite(scores).all()
    again = B.get_method(name, tiny_classifier).attribute(ids, mask, target)
    assert torch.equal(scores, again)


@pytest.mark.filterwarnings("ignore:the LM head decodes at most")  # the fixture's head is random
def test_dls_calibrates_its_layer_when_prepared(tiny_classifier, tiny_batch, monkeypatch):
    """``dls`` chooses its layer once, label-free, when the comparison prepares it: on the
    task's training texts for a default model, on DLS's built-in texts otherwise."""
    import copy
    import dataclasses

    texts = ["the movie was good", "a dull , boring story .", "i think it is fun"] * 3
    monkeypatch.setattr(corpora, "default_corpus", lambda task, size=None: texts[:size])
    # A default model records its task in its config, as load_default does.
    clf = dataclasses.replace(tiny_classifier, model=copy.deepcopy(tiny_classifier.model))
    setattr(clf.model.config, ours.TASK_KEY, "sst2")
    method = B.get_method("dls", clf, calibration=6)
    explainer = method.explainer  # type: ignore[attr-defined]
    assert explainer.selection_ is None  # nothing is spent before the run needs it
    record = method.prepare(["not used for a default task"])  # type: ignore[attr-defined]
    assert explainer.selector.fitted and explainer.layer_selection.mode() == "frozen"
    assert record["calibration"].startswith("6 unlabelled sst2 training texts")
    assert record["calibration_seconds"] > 0 and record["name"] == explainer.selection_.name
    assert record["layer"] in record["layer_indices"] and len(record["scores"]) == 3
    scores = method.attribute(
        tiny_batch["input_ids"], tiny_batch["attention_mask"], tiny_batch["target"]
    )
    assert explainer.last_layer_scores_ is None  # frozen: no online scoring
    assert scores.shape == tiny_batch["input_ids"].shape
    # A second prepare (a resumed run) changes nothing and costs nothing.
    assert method.prepare(texts)["calibration_seconds"] == 0.0  # type: ignore[attr-defined]
    custom = B.get_method("dls", tiny_classifier, calibration=2)
    record = custom.prepare(["the movie was good", "boring .", "fun"])  # type: ignore[attr-defined]
    # A model without a task: DLS's built-in texts, never the run's (the layer is the model's).
    assert record["calibration"].startswith("the built-in unlabelled general-English texts")
    online = B.get_method("dls", clf, calibration=0)
    assert online.prepare(texts) is None  # type: ignore[attr-defined]
    assert online.explainer.layer_selection.mode() == "calibrate"  # type: ignore[attr-defined]


def test_dls_task_and_head_are_explicit(tiny_classifier: TextClassifier) -> None:
    """The task comes from ``task=`` or the model's config, never from its name; no head, no DLS."""
    import dataclasses

    named = dataclasses.replace(tiny_classifier, name="minilm-sst2")
    assert B.get_method("dls", named).calibration_source == (None, 256)  # type: ignore[attr-defined]
    method = B.get_method("dls", tiny_classifier, calibration=6, task="ag_news")
    assert method.calibration_source == ("ag_news", 6)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="LM head"):
        B.get_method("dls", dataclasses.replace(tiny_classifier, lm_head=None))
