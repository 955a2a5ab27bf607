"""Attribution methods, one file each, Captum style."""

from captum_layer_saliency.attr.decoded_layer_saliency import DecodedLayerSaliency

__all__ = ["DecodedLayerSaliency"]
