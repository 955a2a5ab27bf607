"""Small stand-ins for the method and metric registries, for the comparison and CLI tests.

The tests put them in place of the real registries with pytest's ``monkeypatch``:
:func:`patch_fakes` (or the context manager :func:`use_fakes`) replaces the method registry, the
metric registry and the pass counter where the harness and the CLI read them, and optionally the
CLI's model loader and task lookup. The fakes are cheap, deterministic given the global RNG, and
use the method names the report treats specially (``dls``, ``input_x_gradient``), so every report
feature is exercised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from datasets import Dataset
from torch import Tensor, nn

from captum_layer_saliency import metrics as metric_registry
from captum_layer_saliency.cli import common
from captum_layer_saliency.compare.methods import registry as method_registry
from captum_layer_saliency.models import passes

FAKE_METHODS = ("dls", "input_x_gradient", "random")
BINS = (0.01, 0.05, 0.1, 0.2, 0.5)

# Sentences over the conftest vocabulary, of different lengths so batches pad.
TEXTS = [
    "the movie was very good",
    "boring .",
    "i think the acting was awful but the story is fun !",
    "a great film",
    "it was not funny",
    "the plot is slow and dull",
    "we think this is a brilliant and moving story",
]


def toy_dataset(texts: list[str] | None = None, *, rationales: bool = True) -> Dataset:
    """A small dataset in the tasks' schema (``idx`` deliberately not equal to the position)."""
    texts = TEXTS if texts is None else texts
    data: dict[str, list[Any]] = {
        "idx": [100 + i for i in range(len(texts))],
        "text": texts,
        "label": [i % 2 for i in range(len(texts))],
    }
    if rationales:
        data["words"] = [t.split() for t in texts]
        data["rationale"] = [[int(j % 2 == 0) for j in range(len(t.split()))] for t in texts]
    return Dataset.from_dict(data)


@dataclass(frozen=True)
class FakeSpec:
    """A method's registry entry: what listings and the runner read."""

    name: str
    description: str
    kind: str
    notes: str = ""


class FakePassCounter:
    """Counts the model's forward calls (backward calls are counted by the fake methods)."""

    active: FakePassCounter | None = None

    def __init__(self, model: nn.Module) -> None:
        """Count the passes of ``model``."""
        self.model = model
        self.forwards = 0
        self.backwards = 0
        self._handle: Any = None

    def __enter__(self) -> FakePassCounter:
        """Start counting."""

        def hook(*_: Any) -> None:
            self.forwards += 1

        self._handle = self.model.register_forward_hook(hook)
        FakePassCounter.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop counting."""
        self._handle.remove()
        FakePassCounter.active = None


class FakeMethod:
    """``dls``/``input_x_gradient``: deterministic, one forward; ``random``: the global RNG."""

    def __init__(self, name: str, clf: Any) -> None:
        """The fake method ``name`` for ``clf``."""
        self.name = name
        self.clf = clf

    def attribute(self, input_ids: Tensor, attention_mask: Tensor, target: Tensor) -> Tensor:
        """``(batch, seq)`` scores, zero at pads and specials."""
        valid = attention_mask.bool() & ~self.clf.special_mask(input_ids)
        if self.name == "random":
            scores = torch.rand(input_ids.shape)
        else:
            with torch.no_grad():
                self.clf.forward_func(input_ids, attention_mask)
            sign = 1.0 if self.name == "dls" else -1.0
            scores = sign * torch.sin(input_ids.float() + target[:, None].float())
            if FakePassCounter.active is not None:
                FakePassCounter.active.backwards += 1
        return scores.masked_fill(~valid, 0.0)


def resolve_method_name(name: str) -> str:
    """The canonical fake name (``ixg`` resolves); ``ValueError`` for unknown names."""
    key = ALIASES.get(name.strip(), name.strip())
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return key


def get_method(name: str, clf: Any, **options: Any) -> FakeMethod:
    """The fake method ``name`` (options are ignored)."""
    return FakeMethod(resolve_method_name(name), clf)


# The demo's other methods exist too (deterministic, like dls) so that `demo` runs on fakes.
DEMO_EXTRA = ("saliency",)
METHODS = {n: FakeSpec(n, f"fake {n}", "fake") for n in FAKE_METHODS + DEMO_EXTRA}
ALIASES = {"ixg": "input_x_gradient"}


@dataclass(frozen=True)
class FakeMetric:
    """A metric's metadata, with its function."""

    name: str
    higher_is_better: bool
    kind: str
    fn: Callable[..., Tensor]
    description: str = ""


def _top_share(scores: Tensor, special_mask: Tensor) -> Tensor:
    s = scores.masked_fill(special_mask, 0.0).abs()
    return (s.max(-1).values / s.sum(-1).clamp_min(1e-9)).double()


def comprehensiveness(
    forward: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> Tensor:
    """The target's probability times the top token's share of the scores."""
    probs = torch.softmax(forward(input_ids, attention_mask), -1)
    return probs.gather(1, target[:, None]).squeeze(1).double() * _top_share(scores, special_mask)


def sufficiency(
    forward: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> Tensor:
    """One minus the top token's share of the scores."""
    return 1.0 - _top_share(scores, special_mask)


def aopc_curves(
    forward: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    scores: Tensor,
    target: Tensor,
    special_mask: Tensor,
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> dict[str, Tensor]:
    """Per-bin curves from the top token's share, and the bins."""
    share = _top_share(scores, special_mask)[:, None]
    steps = torch.tensor(BINS, dtype=torch.float64)[None, :]
    return {
        "comprehensiveness": share * steps,
        "sufficiency": (1 - share) * (1 - steps),
        "bins": torch.tensor(BINS, dtype=torch.float64),
    }


def overlap(scores: Tensor, rationale: Tensor, valid_mask: Tensor) -> Tensor:
    """The share of rationale tokens among the positively scored ones."""
    top = (scores > 0) & valid_mask
    hits = (top & rationale.bool()).sum(-1).double()
    return hits / rationale.sum(-1).clamp_min(1).double()


METRICS = {
    "comprehensiveness": FakeMetric("comprehensiveness", True, "faithfulness", comprehensiveness),
    "sufficiency": FakeMetric("sufficiency", False, "faithfulness", sufficiency),
    "overlap": FakeMetric("overlap", True, "plausibility", overlap),
}
# The rest of the demo's metrics, as copies of the above.
DEMO_METRIC_COPIES = {
    "log_odds": sufficiency,
    "token_f1": overlap,
    "iou_f1": overlap,
    "auprc": overlap,
}
for _name, _fn in DEMO_METRIC_COPIES.items():
    _kind = "plausibility" if _fn is overlap else "faithfulness"
    METRICS[_name] = FakeMetric(_name, _fn is overlap, _kind, _fn)


def patch_fakes(
    mp: pytest.MonkeyPatch,
    load_model: Callable[[str], Any] | None = None,
    get_task: Callable[[str], Any] | None = None,
) -> None:
    """Replace the registries (and, when given, the CLI's model loader and tasks) with fakes."""
    mp.setattr(method_registry, "METHODS", METHODS)
    mp.setattr(method_registry, "ALIASES", ALIASES)
    mp.setattr(method_registry, "resolve_method_name", resolve_method_name)
    mp.setattr(method_registry, "get_method", get_method)
    mp.setattr(metric_registry, "METRICS", METRICS)
    mp.setattr(metric_registry, "aopc_curves", aopc_curves)
    mp.setattr(passes, "PassCounter", FakePassCounter)
    if load_model is not None:
        mp.setattr(common, "load_model", load_model)
    if get_task is not None:
        mp.setattr(common, "get_task", get_task)


@contextmanager
def use_fakes(
    load_model: Callable[[str], Any] | None = None,
    get_task: Callable[[str], Any] | None = None,
) -> Iterator[None]:
    """:func:`patch_fakes` for the duration of a ``with`` block (e.g. in a module fixture)."""
    with pytest.MonkeyPatch.context() as mp:
        patch_fakes(mp, load_model, get_task)
        yield


def stable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its wall-clock timing, which legitimately differs between runs."""
    return {k: v for k, v in row.items() if k != "seconds"}
