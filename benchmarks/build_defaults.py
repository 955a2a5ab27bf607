"""Regenerate the default-model artifacts, the figure of docs/default_models.md, BENCHMARKS.md § 5.

Usage (from the repository root; about 20 minutes on 2 busy CPU cores)::

    HF_HUB_OFFLINE=1 python benchmarks/build_defaults.py            # build, then report
    HF_HUB_OFFLINE=1 python benchmarks/build_defaults.py --report   # report only

The build is :func:`captum_layer_saliency.zoo.build.build_defaults` with ``force=True`` into the
packaged directory, the same function as ``captum-layer-saliency build-defaults --force --cache-dir
captum_layer_saliency/zoo/artifacts``; the report prints the Markdown tables of the manifest's
measurements and draws the per-layer coherence curves to ``docs/default_models_coherence.png``.
Afterwards refit the stored layer selection (``python -m captum_layer_saliency.zoo.selection``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from captum_layer_saliency.zoo.build import build_defaults
from captum_layer_saliency.zoo.load import HEAD, PACKAGED_DIR, TASKS, read_manifest

FIGURE = Path("docs/default_models_coherence.png")
CURVES = {
    "pretrained": "pre-trained encoder",
    "sst2": "SST-2 classifier",
    "ag_news": "AG News classifier",
    "hatexplain": "HateXplain classifier",
}


def coherence_markdown(coherence: dict[str, Any], key: str) -> str:
    """A Markdown table: one row per model, one column per layer.

    Args:
        coherence: the manifest's ``coherence`` block.
        key: ``"all"`` (non-padding positions) or ``"real"`` (specials excluded).

    Returns:
        The table.
    """
    n_layers = len(coherence["pretrained"][key])
    lines = [
        "| model | " + " | ".join(str(i) for i in range(n_layers)) + " |",
        "|---|" + "---|" * n_layers,
    ]
    for name, label in CURVES.items():
        if name in coherence:
            lines.append(
                f"| {label} | " + " | ".join(f"{v:.3f}" for v in coherence[name][key]) + " |"
            )
    return "\n".join(lines)


def plot_coherence(coherence: dict[str, Any], path: Path) -> None:
    """Draw the coherence curves (both position sets) to ``path``.

    Args:
        coherence: the manifest's ``coherence`` block.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, title in (
        (axes[0], "all", "all non-padding positions"),
        (axes[1], "real", "non-special positions"),
    ):
        for name, label in CURVES.items():
            if name in coherence:
                values = coherence[name][key]
                ax.plot(range(len(values)), values, marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 decoded token = input token")
    axes[0].legend()
    n = coherence["sentences"]
    fig.suptitle(f"Coherence with the trained MLM head, {coherence['data']} ({n} sentences)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def report(directory: Path) -> None:
    """Print the manifest's measurements as Markdown and draw the coherence figure.

    Args:
        directory: the artifact directory.
    """
    manifest = read_manifest(directory)
    if manifest is None:
        raise SystemExit(f"no manifest in {directory}; build first")
    entries = manifest["entries"]
    print("| artifact | bytes | sha256 |\n|---|---|---|")
    for entry in entries.values():
        print(f"| `{entry['file']}` | {entry['bytes']:,} | `{entry['sha256']}` |")
    for task in TASKS:
        if task in entries:
            m = entries[task]["metrics"]
            where = f"{m['eval_split']} ({m['eval_examples']})"
            print(f"\n{task}: accuracy {m['accuracy']:.4f} on {where}")
            print(f"  {m['train_examples']} examples, {m['steps']} steps, {m['train_seconds']} s")
    if HEAD in entries:
        print("\nMLM head:", entries[HEAD]["metrics"])
    coherence = manifest.get("coherence")
    if coherence:
        for key in ("all", "real"):
            print(f"\ncoherence ({key}):\n" + coherence_markdown(coherence, key))
        plot_coherence(coherence, FIGURE)
        print(f"\nwrote {FIGURE}")


def main() -> None:
    """Build (unless ``--report``) into ``--dir``, then report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="skip the build")
    parser.add_argument("--dir", type=Path, default=PACKAGED_DIR)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    args = parser.parse_args()
    if not args.report:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        build_defaults(force=True, cache_dir=args.dir, num_threads=args.threads)
    report(args.dir)


if __name__ == "__main__":
    main()
