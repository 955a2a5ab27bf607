"""Default reference corpora: a task's training texts, deduplicated and sampled with a seed."""

from __future__ import annotations

import pytest

from captum_layer_saliency._utils import text_key
from captum_layer_saliency.data.corpora import default_corpus


def test_default_corpus_is_deduplicated_and_seeded() -> None:
    texts = default_corpus("ag_news", size=50)
    assert len(texts) == 50 and len({text_key(t) for t in texts}) == 50
    assert texts == default_corpus("ag_news", size=50)
    with pytest.raises(ValueError, match="no default reference corpus"):
        default_corpus("imdb")
