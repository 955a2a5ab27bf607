"""Floor 4: the ``captum-layer-saliency`` command line (explain, compare, report, ...)."""

from captum_layer_saliency.cli.app import main

__all__ = ["main"]
