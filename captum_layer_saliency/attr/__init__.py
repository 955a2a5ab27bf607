"""Attribution methods, one file each, Captum style."""

from captum_layer_saliency.attr._upper_model import layer_gradients_and_outputs, layer_outputs
from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency
from captum_layer_saliency.attr.layer_methods import LayerMethod
from captum_layer_saliency.attr.layer_selection import CONFIG_KEY, stored_selection

__all__ = [
    "CONFIG_KEY",
    "DecodedLayerSaliency",
    "LayerMethod",
    "layer_gradients_and_outputs",
    "layer_outputs",
    "stored_selection",
]
