"""Dataset loaders. Every loader tries the Hugging Face hub first, then a local copy.

SST-2 and AG News ship as compressed copies inside the package (``data/vendored``), so they work
offline on a fresh install. Other loaders live in their own submodules.
"""

from captum_layer_saliency.data._schema import mean_rationale_fraction
from captum_layer_saliency.data._source import DATA_DIR_ENV, DataUnavailableError, resolve_data_dir
from captum_layer_saliency.data.ag_news import AG_NEWS_LABELS, load_ag_news
from captum_layer_saliency.data.hatexplain import HATEXPLAIN_LABELS, load_hatexplain
from captum_layer_saliency.data.sst2 import SST2_LABELS, load_sst2

__all__ = [
    "AG_NEWS_LABELS",
    "DATA_DIR_ENV",
    "HATEXPLAIN_LABELS",
    "SST2_LABELS",
    "DataUnavailableError",
    "load_ag_news",
    "load_hatexplain",
    "load_sst2",
    "mean_rationale_fraction",
    "resolve_data_dir",
]
