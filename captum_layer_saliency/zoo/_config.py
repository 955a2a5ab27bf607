"""The build configuration of the default models: what determines the trained artifacts.

Recorded in full in each manifest entry (``config``), so a user cache can be checked and rebuilt
with the configuration it was built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HeadConfig:
    """How the MLM head is trained (see the module docstring).

    Attributes:
        sst2_sentences: SST-2 train sentences used (a seeded sample, labels unused).
        ag_news_texts: AG News ``train_part`` texts used (a seeded sample, labels unused).
        epochs: passes over the cached masked positions.
        batch_size: masked positions per step.
        lr: AdamW peak learning rate (linear decay to 0).
        eval_sentences: held-out texts for the head's accuracies: the first half of this many
            from SST-2 dev, the rest from AG News ``heldout``.
    """

    sst2_sentences: int = 16000
    ag_news_texts: int = 3000
    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    eval_sentences: int = 1000


@dataclass(frozen=True)
class ClassifierConfig:
    """How one classifier is fine-tuned.

    Attributes:
        train_examples: training examples (a seeded sample of the training split).
        epochs: passes over them.
        batch_size: examples per step.
        lr: AdamW peak learning rate (6 % linear warm-up, then linear decay).
        max_length: token budget in training (longer texts are cut).
        eval_examples: evaluation examples (``None``: the whole evaluation split).
    """

    train_examples: int
    epochs: int
    batch_size: int = 32
    lr: float = 1e-3
    max_length: int = 128
    eval_examples: int | None = None


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the built artifacts (with the library and torch versions).

    Attributes:
        seed: seeds Python, NumPy and torch before each stage.
        lora_rank: LoRA rank.
        lora_alpha: LoRA scale numerator (the update is scaled by ``alpha / rank``).
        head: the MLM head's training.
        classifiers: each task's fine-tuning.
        coherence_sentences: SST-2 dev sentences for the per-layer coherence table.
        fast: a tiny configuration for tests; its models are not useful.
    """

    seed: int = 0
    lora_rank: int = 16
    lora_alpha: float = 32.0
    head: HeadConfig = field(default_factory=HeadConfig)
    classifiers: dict[str, ClassifierConfig] = field(
        default_factory=lambda: {
            "sst2": ClassifierConfig(train_examples=16000, epochs=1, lr=2e-3, max_length=64),
            "ag_news": ClassifierConfig(
                train_examples=2400, epochs=1, batch_size=16, max_length=64
            ),
            "hatexplain": ClassifierConfig(
                train_examples=1922, epochs=3, batch_size=16, max_length=128
            ),
        }
    )
    coherence_sentences: int = 872
    fast: bool = False

    @classmethod
    def tiny(cls) -> BuildConfig:
        """A configuration that builds everything in seconds (for tests)."""
        return cls(
            head=HeadConfig(
                sst2_sentences=64, ag_news_texts=16, epochs=1, batch_size=64, eval_sentences=16
            ),
            classifiers={
                "sst2": ClassifierConfig(
                    train_examples=32, epochs=1, batch_size=16, max_length=32, eval_examples=16
                ),
                "ag_news": ClassifierConfig(
                    train_examples=16, epochs=1, batch_size=8, max_length=32, eval_examples=8
                ),
                "hatexplain": ClassifierConfig(
                    train_examples=16, epochs=1, batch_size=8, max_length=32, eval_examples=8
                ),
            },
            coherence_sentences=8,
            fast=True,
        )
