"""Floor 1: how Hugging Face classifiers are found, called and decoded.

* :mod:`.surgery`: where each family keeps its embeddings, blocks, final norm and LM head.
* :mod:`.classifier`: :class:`~.classifier.TextClassifier` (model + tokenizer), encoding,
  special tokens.
* :mod:`.inputs`: the one forward every method and metric calls (segment and position ids,
  other keyword inputs, output checks).
* :mod:`.targets`: the one target normaliser and the output activation.
* :mod:`.heads`: :func:`~.heads.load_lm_head` and its compatibility checks.
* :mod:`.capture`: one forward and one backward over several layers; hooks always removed.
* :mod:`.passes`: forward/backward pass counting in full-pass equivalents.
* :mod:`.words`: word-level scores from the tokenizer's own word ids.
* :mod:`.backbones`: real pre-trained backbones loaded offline (SmolLM2-135M from its GGUF).

Nothing here imports the methods, the data, the default models, the harness or the CLI.
"""
