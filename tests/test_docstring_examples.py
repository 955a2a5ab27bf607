"""The self-contained ``Examples::`` blocks of the docstrings run as doctests.

Examples that need a model (the SmolLM2 loaders, the registry's peers) are shown, not run; the
DLS class's example is run by ``tests/attr/test_dls_footprint.py``.
"""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch
import transformers

from captum_layer_saliency.attr import coherence, lafa_setup

RUN = [
    (lafa_setup, lafa_setup.LAFAConfig),
    (coherence, coherence.next_token_hits),
    (coherence, coherence.default_coherence_score),
    (coherence, coherence.coherence_retention),
]


@pytest.mark.parametrize(("module", "obj"), RUN, ids=lambda x: getattr(x, "__name__", ""))
def test_the_example_runs(module: Any, obj: Any) -> None:
    tests = doctest.DocTestFinder().find(
        obj,
        obj.__name__,
        module=module,
        globs={**vars(module), "torch": torch, "transformers": transformers},
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for test in tests:
        examples += len(test.examples)
        runner.run(test)
    assert examples > 0, f"{obj.__name__} has no example"
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {obj.__name__}"
