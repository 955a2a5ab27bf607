"""Never touching the user's model: threads, two explainers, an exception mid-call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from captum_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.lafa import LAFA
from captum_layer_saliency.attr.lafa_setup import base_method
from captum_layer_saliency.attr.layer_index import cached_layer_index
from captum_layer_saliency.compare.methods.registry import get_method
from captum_layer_saliency.models.classifier import TextClassifier
from captum_layer_saliency.models.surgery import find_model_parts

CORPUS = ["the film was good", "a boring and dull story", "i think it is fun", "not funny"]


def _state(model: nn.Module) -> list[Any]:
    """Everything about the model an explainer must leave as found."""
    out: list[Any] = []
    for name, module in model.named_modules():
        out.append(
            (
                name,
                "forward" in module.__dict__,
                len(module._forward_hooks),
                len(module._forward_pre_hooks),
                len(module._backward_hooks),
                len(getattr(module, "_backward_pre_hooks", {})),
                module.training,
            )
        )
    for name, param in model.named_parameters():
        out.append((name, param.requires_grad, param.grad is None, param.detach().clone()))
    return out


def _assert_same(before: list[Any], after: list[Any]) -> None:
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert a[:-1] == b[:-1] if isinstance(a[-1], Tensor) else a == b
        if isinstance(a[-1], Tensor):
            assert torch.equal(a[-1], b[-1]), a[0]


def _threads(call: Callable[[int], Tensor], n_calls: int) -> dict[int, Tensor]:
    """``call(i)`` for ``i < n_calls`` from two threads at once, each result by ``i``."""
    results: dict[int, Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(offset: int) -> None:
        start.wait()
        try:
            for i in range(offset, n_calls, 2):
                results[i] = call(i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    workers = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return results


def _dls(clf: TextClassifier, **options: Any) -> DecodedLayerSaliency:
    return DecodedLayerSaliency.for_model(
        clf.model, clf.lm_head, clf.tokenizer, layers=1, selector=None, **options
    )


def _check_threads(
    clf: TextClassifier, batch: dict[str, Tensor], call: Callable[[int], Tensor]
) -> None:
    before = _state(clf.model)
    sequential = {i: call(i) for i in range(30)}
    _assert_same(before, _state(clf.model))
    threaded = _threads(call, 30)
    _assert_same(before, _state(clf.model))
    for i in range(30):
        torch.testing.assert_close(threaded[i], sequential[i], rtol=0, atol=0)


def _rows(batch: dict[str, Tensor], i: int) -> tuple[Tensor, Tensor, Tensor]:
    """Call ``i``'s example: a different row (and length) of the batch each time."""
    b = i % batch["input_ids"].shape[0]
    n = int(batch["attention_mask"][b].sum())
    return (
        batch["input_ids"][b : b + 1, :n],
        batch["attention_mask"][b : b + 1, :n],
        batch["target"][b : b + 1],
    )


@pytest.mark.parametrize(
    ("layer_method", "to_input"),
    [("integrated_gradients", False), ("gradient", False), ("integrated_gradients", True)],
)
def test_two_threads_on_one_dls_leave_the_model_as_found(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, Tensor],
    layer_method: str,
    to_input: bool,
) -> None:
    # to_input: the steps replace the layer's input, so they run on the hook fallback.
    dls = _dls(tiny_classifier, layer_method=layer_method)

    def call(i: int) -> Tensor:
        ids, mask, _ = _rows(tiny_batch, i)
        out = dls.attribute(ids, attribute_to_layer_input=to_input, attention_mask=mask)
        return out  # type: ignore[no-any-return]

    _check_threads(tiny_classifier, tiny_batch, call)


def test_two_threads_with_the_class_named_at_a_low_layer(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    # At the embeddings with the class given, the input's forward stops at the layer and the
    # step runs the whole network with a thread-keyed hook putting the state in.
    dls = DecodedLayerSaliency.for_model(
        tiny_classifier.model,
        tiny_classifier.lm_head,
        tiny_classifier.tokenizer,
        layers=0,
        selector=None,
    )

    def call(i: int) -> Tensor:
        ids, mask, target = _rows(tiny_batch, i)
        return dls.attribute(ids, target=target, attention_mask=mask)  # type: ignore[return-value]

    _check_threads(tiny_classifier, tiny_batch, call)
    assert dls.last_cost_ == {"forwards": 1.0, "backwards": 1.0}  # 0 + 0 + 1 step, 1 back


def test_two_dls_explainers_on_one_model_in_two_threads(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    explainers = [_dls(tiny_classifier), _dls(tiny_classifier, n_steps=2)]

    def call(i: int) -> Tensor:
        ids, mask, _ = _rows(tiny_batch, i)
        return explainers[i % 2].attribute(ids, attention_mask=mask)  # type: ignore[return-value]

    _check_threads(tiny_classifier, tiny_batch, call)


def test_two_threads_on_registry_ig_leave_the_model_as_found(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    ig = get_method("integrated_gradients", tiny_classifier, n_steps=4)

    def call(i: int) -> Tensor:
        return ig.attribute(*_rows(tiny_batch, i))

    _check_threads(tiny_classifier, tiny_batch, call)


def test_two_threads_on_lafa_leave_the_model_as_found(
    tiny_classifier: TextClassifier,
    tiny_batch: dict[str, Tensor],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAPTUM_LAYER_SALIENCY_CACHE", str(tmp_path / "cache"))
    index = cached_layer_index(
        tiny_classifier.model,
        tiny_classifier.tokenizer,
        CORPUS,
        layer=1,
        cache_dir=str(tmp_path / "index"),
        progress=False,
    )
    base = base_method(tiny_classifier, "saliency", reduction="squared_l2")
    lafa = LAFA(tiny_classifier.model, tiny_classifier.tokenizer, base, index, k=2, epsilon=None)

    def call(i: int) -> Tensor:
        ids, mask, target = _rows(tiny_batch, i)
        return lafa.attribute(ids, target=target, attention_mask=mask)

    _check_threads(tiny_classifier, tiny_batch, call)


def test_an_exception_mid_call_leaves_the_model_as_found(
    tiny_classifier: TextClassifier, tiny_batch: dict[str, Tensor]
) -> None:
    dls = _dls(tiny_classifier)
    before = _state(tiny_classifier.model)
    block = find_model_parts(tiny_classifier.model).blocks[1]

    calls: list[int] = []

    def fail(*_: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # the input's own forward passes; the first step fails
            raise RuntimeError("boom in the upper blocks")

    handle = block.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            dls.attribute(tiny_batch["input_ids"], attention_mask=tiny_batch["attention_mask"])
    finally:
        handle.remove()
    _assert_same(before, _state(tiny_classifier.model))
    # And the explainer still gives the maps of a fresh one.
    ids, mask = tiny_batch["input_ids"], tiny_batch["attention_mask"]
    fresh = _dls(tiny_classifier).attribute(ids, attention_mask=mask)
    torch.testing.assert_close(dls.attribute(ids, attention_mask=mask), fresh)
