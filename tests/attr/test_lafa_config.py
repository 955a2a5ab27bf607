"""LAFAConfig: the one source of LAFA's defaults, checked when built, recorded on the explainer."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from captum_layer_saliency import LAFA, LAFAConfig
from captum_layer_saliency.attr import lafa_setup
from captum_layer_saliency.compare.methods import lafa as lafa_method


def test_the_defaults_are_read_from_the_config() -> None:
    config = asdict(LAFAConfig())
    assert config == {**lafa_setup.DEFAULTS, **lafa_setup.BUILD_DEFAULTS}
    assert set(lafa_setup.DEFAULTS).isdisjoint(lafa_setup.BUILD_DEFAULTS)
    # The paper's settings (Zhang et al., 2022, section 5).
    assert (config["k"], config["epsilon"], config["lam"]) == (10, 0.39, 0.44)
    assert LAFAConfig().resolved_min_similarity == 0.999
    assert LAFAConfig(aggregation="weighted_mean").resolved_min_similarity == 0.5
    # The registry's factory takes the same defaults.
    for name, value in lafa_setup.BUILD_DEFAULTS.items():
        assert lafa_method.FACTORY_DEFAULTS[name] == value


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"k": -1}, "k must be"),
        ({"k": True}, "k must be"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"aggregation": "median"}, "unknown aggregation"),
        ({"kernel": "box"}, "unknown kernel"),
        ({"lam": -0.1}, "lam"),
        ({"sigma": 0.0}, "sigma"),
        ({"min_similarity": 2.0}, "min_similarity"),
        ({"top_matches": 0}, "top_matches"),
        ({"token_repr": "char"}, "unknown token_repr"),
        ({"base": "lime"}, "unknown base"),
        ({"neighbours": "web"}, "unknown neighbours"),
    ],
)
def test_every_bad_setting_is_named(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LAFAConfig(**bad)


def test_the_explainer_records_its_settings(tiny_classifier) -> None:  # type: ignore[no-untyped-def]
    texts = ["a fine film", "a dull film", "the plot is thin", "great acting"]
    lafa = LAFA.for_classifier(
        tiny_classifier, texts, base="input_x_gradient", k=3, layer=1, progress=False
    )
    assert isinstance(lafa.config, LAFAConfig)
    assert lafa.config == LAFAConfig(k=3, base="input_x_gradient", layer=1)
    assert {f.name for f in fields(lafa.config)} == set(asdict(LAFAConfig()))
    with pytest.raises(ValueError, match="lam must be"):
        LAFA.for_classifier(tiny_classifier, texts, lam=-1.0, progress=False)
