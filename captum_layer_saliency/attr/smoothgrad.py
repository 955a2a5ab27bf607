"""SmoothGrad (Smilkov et al., 2017) at the embeddings: LAFA's default base, and ``smoothgrad``.

For each example, ``n_samples`` copies of its embeddings output get Gaussian noise of standard
deviation ``noise × std(embeddings of the example's real tokens)`` (the SmoothGrad paper's
"noise level", relative to the input's spread); the gradient of the target logit at each noisy
copy is reduced over the hidden dimension (``reduction``, see
:mod:`captum_layer_saliency.attr.reductions`) and the reduced maps are averaged over the samples.
Reducing before averaging is SmoothGrad's definition (it averages sensitivity *maps*); with
``reduction="squared_l2"`` it is LAFA's SmoothGrad base (Zhang et al., NAACL 2022, Eq. 3), with
25 samples, the count that paper chose on SST.

Examples are explained one at a time, cut to their real tokens, with noise seeded by the
method's seed and the example's token ids, so a sentence's scores do not depend on its batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_layer_saliency.attr.attributor import EmbeddingAttributor
from captum_layer_saliency.models.classifier import TextClassifier

__all__ = ["SmoothGradAttributor"]


class SmoothGradAttributor(EmbeddingAttributor):
    """SmoothGrad at the embeddings (see the module docstring).

    Args:
        clf: the classifier bundle.
        seed: the noise seed (mixed with each example's token ids).
        n_samples: noisy copies per example (default 25).
        noise: the noise standard deviation relative to the standard deviation of the example's
            embeddings output (default 0.1).
        reduction: ``"l2"`` (default, like ``saliency``), ``"squared_l2"`` (LAFA's Eq. 3),
            ``"l1"`` or ``"sum"``.
        layer: ``"embeddings"`` or ``"word_embeddings"``.
        internal_batch_size: noisy copies per forward pass (default: all at once).

    Raises:
        ValueError: ``n_samples < 1``, a negative ``noise`` or an unknown reduction.
    """

    def __init__(
        self,
        clf: TextClassifier,
        *,
        seed: int = 0,
        n_samples: int = 25,
        noise: float = 0.1,
        reduction: str = "l2",
        layer: str = "embeddings",
        internal_batch_size: int | None = None,
    ) -> None:
        """Check and record the options (see the class docstring)."""
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be positive, got {internal_batch_size!r}")
        super().__init__(
            clf,
            seed,
            layer,
            None,
            n_samples=n_samples,
            noise=noise,
            reduction=reduction,
            internal_batch_size=internal_batch_size,
        )
        self.n_samples, self.noise = n_samples, noise
        self.internal_batch_size = internal_batch_size or n_samples

    def _scores(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        target: Tensor,
        special: Tensor,
        valid: Tensor,
    ) -> Tensor:
        with torch.enable_grad():
            return self._each_example(input_ids, attention_mask, target, valid, self._explain)

    def _explain(self, ids: Tensor, mask: Tensor, target: Tensor) -> Tensor:
        """``(n,)`` SmoothGrad scores of one ``(1, n)`` example (the caller seeds the noise)."""
        captured: dict[str, Tensor] = {}

        def clean_hook(module: Any, args: Any, output: Tensor) -> None:
            captured["clean"] = output.detach()

        handle = self.layer.register_forward_hook(clean_hook)
        try:
            with torch.no_grad():
                self.forward_func(ids, mask)
        finally:
            handle.remove()
        clean = captured["clean"]  # (1, n, d)
        sigma = self.noise * float(clean[0].float().std())
        noise = torch.randn((self.n_samples, *clean.shape[1:]), device=clean.device) * sigma
        total = torch.zeros(ids.shape[1], device=ids.device)
        for start in range(0, self.n_samples, self.internal_batch_size):
            chunk = noise[start : start + self.internal_batch_size].to(clean.dtype)
            rows = chunk.shape[0]

            def noisy_hook(module: Any, args: Any, output: Tensor, chunk: Tensor = chunk) -> Tensor:
                noisy = output + chunk
                captured["noisy"] = noisy
                return noisy

            handle = self.layer.register_forward_hook(noisy_hook)
            try:
                logits = self.forward_func(ids.expand(rows, -1), mask.expand(rows, -1))
            finally:
                handle.remove()
            picked = logits[:, int(target.reshape(-1)[0])].sum()
            (grad,) = torch.autograd.grad(picked, captured["noisy"])
            total += self._reduce(grad.float()).sum(0)
        return total / self.n_samples
