"""``python -m captum_layer_saliency``: see :mod:`captum_layer_saliency.cli`."""

from .cli import main

raise SystemExit(main())
