"""``python -m captum_layer_saliency``: see :mod:`captum_layer_saliency.cli.app`."""

from captum_layer_saliency.cli.app import main

raise SystemExit(main())
