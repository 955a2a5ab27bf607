"""Attribution methods, one file each, Captum style."""

from .decoded_layer_saliency import DecodedLayerSaliency

__all__ = ["DecodedLayerSaliency"]
