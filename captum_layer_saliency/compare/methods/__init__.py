"""The comparison harness's method registry: every method as a ``(batch, seq)`` token scorer.

This is the only place where :mod:`captum_layer_saliency.attr` meets the harness.
"""
