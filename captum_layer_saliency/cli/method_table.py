"""The method registry's listing, for ``list-methods`` without importing torch.

The registry (:mod:`captum_layer_saliency.compare.methods.registry`) imports torch and Captum to
define its factories; ``list-methods`` prints this table instead, and
``tests/cli/test_first_minute.py`` fails, printing the new table, whenever it and the registry
disagree (after adding or renaming a method, paste the printed table here).
"""

from __future__ import annotations

__all__ = ["METHOD_TABLE"]

#: ``(name, kind, description, aliases)`` of every registered method, in the registry's order.
METHOD_TABLE: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("saliency", "gradient", "L2 norm of the gradient at the embeddings", ("grad", "gradient")),
    (
        "input_x_gradient",
        "gradient",
        "embeddings × gradient, summed over the hidden dim",
        ("grad_x_input", "gxa", "ixg"),
    ),
    (
        "integrated_gradients",
        "gradient",
        "Layer IG at the embeddings, 25 steps, PAD baseline",
        ("ig", "lig"),
    ),
    (
        "smoothgrad",
        "gradient",
        "gradient at noisy embeddings, reduced per sample and averaged, 25 samples",
        ("sg", "smooth_grad"),
    ),
    ("deeplift", "gradient", "Layer DeepLift at the embeddings, PAD baseline", ("dl",)),
    (
        "deeplift_shap",
        "gradient",
        "Layer DeepLiftSHAP, baselines: PAD and all-[PAD]",
        ("deepliftshap", "dlshap"),
    ),
    (
        "gradient_shap",
        "gradient",
        "Layer GradientSHAP at the embeddings, 5 samples",
        ("gradientshap", "gradshap", "gshap"),
    ),
    (
        "gim",
        "gradient",
        "GIM (Edin et al., 2025): Input×Gradient (PAD baseline) through a modified backward",
        ("gradient_interaction_modifications",),
    ),
    (
        "attnlrp",
        "gradient",
        "AttnLRP (Achtibat et al., 2024): LRP as Input×Gradient through a modified backward "
        "(LRP is patented: free for personal and scientific use)",
        ("attn_lrp",),
    ),
    ("occlusion", "perturbation", "Occlusion, window 3 tokens, replaced by [PAD]", ("occ",)),
    ("lime", "perturbation", "LIME over tokens, 25 samples, replaced by [PAD]", ()),
    (
        "shapley_sampling",
        "perturbation",
        "Shapley value sampling, 25 permutations",
        ("shapley", "svs"),
    ),
    ("kernel_shap", "perturbation", "KernelSHAP over tokens, 25 samples", ("kernelshap", "kshap")),
    (
        "loo",
        "perturbation",
        "leave-one-out: each word replaced by [MASK] ([PAD] without one), n forwards",
        ("leave_one_out",),
    ),
    (
        "attention_cls",
        "attention",
        "last-layer attention from [CLS], mean over heads",
        ("attention", "attn"),
    ),
    ("attention_rollout", "attention", "attention rollout from [CLS]", ("rollout",)),
    ("random", "control", "uniform random scores (seeded)", ()),
    (
        "decompx",
        "decomposition",
        "DecompX (Modarressi et al., 2023): each token's part of the logit, one forward",
        ("decomp_x",),
    ),
    (
        "dls",
        "layer",
        "Decoded Layer Saliency at its defaults (integrated gradients at its layer, 1 step)",
        ("decoded_layer_saliency",),
    ),
    (
        "dls_gradient",
        "layer",
        "DLS with the paper's gradient x activation at its layer",
        ("dls_grad_x_act",),
    ),
    (
        "dls_ig",
        "layer",
        "DLS with integrated gradients at its layer (2 steps, PAD baseline)",
        ("dls_integrated_gradients",),
    ),
    (
        "dls_lrp",
        "layer",
        "DLS through AttnLRP's backward: gradient x activation at its layer, AttnLRP's "
        "rules above it (LRP is patented: free for personal and scientific use)",
        ("dls_attnlrp",),
    ),
    (
        "lafa",
        "gradient",
        "LAFA: a base saliency smoothed over k neighbours in the model's own hidden layer",
        ("locally_aggregated_feature_attribution",),
    ),
)
