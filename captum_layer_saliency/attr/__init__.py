"""Attribution methods, one file each, Captum style."""

from captum_layer_saliency.attr._calibration import CONFIG_KEY, stored_selection
from captum_layer_saliency.attr._layer_methods import LayerMethod
from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency

__all__ = ["CONFIG_KEY", "DecodedLayerSaliency", "LayerMethod", "stored_selection"]
