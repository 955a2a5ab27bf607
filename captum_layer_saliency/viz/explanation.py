"""One explained text as an object: save and load it (JSON Lines), draw it, render it.

:class:`Explanation` holds what ``captum-layer-saliency explain`` writes, one JSON object per
line of ``explanations.jsonl`` (the schema is :data:`SCHEMA_FIELDS`; :func:`save_explanations`
and :func:`load_explanations` read and write it, and an explanation loads back equal).

**Label sets.** For a multi-label head (``problem_type="multi_label_classification"``) what is
predicted and explained is a label set (every label whose sigmoid is over 0.5; see
:func:`~captum_layer_saliency.models.targets.predicted_target`): ``predicted`` and ``target`` are
then sorted lists of label indices (``[0, 2]``), as the rows of ``compare`` store them, and the
labels are named ``"x+z"``. A single-label head's are class indices (ints), as before.

**Colours.** Every renderer of this package (:meth:`Explanation.plot`,
:meth:`Explanation.to_html`, the report) uses one diverging map, ``RdBu_r`` centred on zero:
**red = evidence for the explained class, blue = evidence against it**, white = neutral, with
symmetric limits ``±max|score|`` per explanation. Captum's ``visualize_text`` has its own,
fixed colours, the other way round for positive scores: **green = for, red = against**. The
record from :meth:`Explanation.to_visualization_record` is what Captum expects (scores scaled
into ``[-1, 1]``, the names of the classes, the total attribution), so a page drawn by Captum
reads correctly, in Captum's colours.
"""

from __future__ import annotations

import html
import json
import math
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from captum.attr import visualization

from captum_layer_saliency._utils import append_durably, atomic_write
from captum_layer_saliency.errors import CaptumLayerSaliencyError
from captum_layer_saliency.viz.html import html_page, render_html
from captum_layer_saliency.viz.plots import plot_token_heatmap

__all__ = [
    "SCHEMA_FIELDS",
    "Explanation",
    "ExplanationFileError",
    "explanations_html",
    "load_explanations",
    "save_explanations",
]

PathLike = str | os.PathLike[str]
#: An invisible separator marking, in the HTML renderer, a word glued to the previous one.
_GLUE = "\u2063"


class ExplanationFileError(CaptumLayerSaliencyError, ValueError):
    """An explanations file that cannot be read, or a line that is not an explanation."""


@dataclass
class Explanation:
    """The explanation of one text (or text pair) by one method, for one target class.

    Attributes:
        text: the explained text.
        tokens: the tokens of its encoding, special tokens included (no padding).
        scores: one attribution per token (0.0 for special tokens); units are the method's
            (for DLS: gradient x activation, summed over the hidden size).
        predicted: the predicted class index, or, for a multi-label head, the predicted label
            set as a sorted list of label indices.
        predicted_label: its name (a label set's names joined by ``"+"``).
        probability: the model's probability of the predicted class (a label set's: the
            product of its labels' sigmoids).
        target: the explained class index (the prediction unless asked otherwise), or the
            explained label set as a sorted list of label indices (a multi-label head).
        target_label: its name.
        target_probability: the model's probability of the explained class (or label set).
        method: the attribution method's canonical name (e.g. ``"dls"``).
        model: the model's name.
        version: the captum-layer-saliency version that computed it.
        text_pair: the second text of a pair, or ``None``.
        words: the words (see :mod:`captum_layer_saliency.models.words`), or ``None``.
        word_scores: one score per word, or ``None``.
        token_words: the word index of each token (``-1``: special token), or ``None``.
        word_reduce: how token scores were merged into words (``"sum"``, ``"mean"``,
            ``"max"``), or ``None``.
        layer: the layer the method attributed at (DLS: the selected layer), when it has one.
        truncated: the text was cut to the model's token budget.
        id: an identifier of the text (its position in the input, or the input's ``id``).
        options: the method's settings, for the record.
    """

    text: str
    tokens: list[str]
    scores: list[float]
    predicted: int | list[int]
    predicted_label: str
    probability: float
    target: int | list[int]
    target_label: str
    target_probability: float
    method: str
    model: str
    version: str
    text_pair: str | None = None
    words: list[str] | None = None
    word_scores: list[float] | None = None
    token_words: list[int] | None = None
    word_reduce: str | None = None
    layer: str | None = None
    truncated: bool = False
    id: str | int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check that the parallel fields have matching lengths.

        A label set (a list or tuple of label indices) is kept as a sorted list of ints.

        Raises:
            ValueError: tokens and scores, words and word scores, or tokens and ``token_words``
                differ in length, or only one of words and word scores is given; a target or
                prediction that is neither a class index nor a non-empty list of them.
        """
        self.predicted = _class_or_set(self.predicted, "predicted")
        self.target = _class_or_set(self.target, "target")
        if len(self.tokens) != len(self.scores):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.scores)} scores")
        if (self.words is None) != (self.word_scores is None):
            raise ValueError("words and word_scores come together")
        if (
            self.words is not None
            and self.word_scores is not None
            and len(self.words) != len(self.word_scores)
        ):
            raise ValueError(f"{len(self.words)} words but {len(self.word_scores)} scores")
        if self.token_words is not None and len(self.token_words) != len(self.tokens):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.token_words)} token_words")

    # ----------------------------------------------------------------------- views

    def units(self, words: bool | None = None) -> tuple[list[str], list[float]]:
        """The pieces to show and their scores.

        The words when there are (or ``words=True``), else the tokens without the special ones.

        Args:
            words: show the words (default: when the explanation has them) or the tokens.

        Returns:
            ``(pieces, scores)``, two lists of the same length.

        Raises:
            ValueError: ``words=True`` on an explanation without word scores.
        """
        use_words = self.words is not None if words is None else words
        if use_words:
            if self.words is None or self.word_scores is None:
                raise ValueError("this explanation has no word scores (explain with words)")
            return list(self.words), list(self.word_scores)
        keep = self._real_tokens()
        return [self.tokens[i] for i in keep], [self.scores[i] for i in keep]

    def _real_tokens(self) -> list[int]:
        if self.token_words is not None:
            return [i for i, w in enumerate(self.token_words) if w >= 0]
        # Without an alignment the special tokens are the zero-scored bracketed ones.
        return [
            i
            for i, (t, s) in enumerate(zip(self.tokens, self.scores, strict=True))
            if not (s == 0.0 and _looks_special(t))
        ]

    def top(self, k: int = 5, words: bool | None = None) -> list[tuple[str, float]]:
        """The ``k`` pieces (words, else tokens) with the largest scores, largest first.

        The largest *positive* scores: the evidence for the explained class.
        """
        units, scores = self.units(words)
        ranked = sorted(zip(units, scores, strict=True), key=lambda p: -p[1])
        return ranked[:k]

    # ----------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the schema of ``explanations.jsonl``)."""
        data = asdict(self)
        for key in ("scores", "word_scores"):
            if data[key] is not None:
                data[key] = [_finite(v) for v in data[key]]
        data["probability"] = _finite(data["probability"])
        data["target_probability"] = _finite(data["target_probability"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        """The explanation a :meth:`to_dict` dict (or a line of ``explanations.jsonl``) holds.

        Unknown keys are ignored (files written by a later version still load).

        Raises:
            ValueError: a required field is missing, or lengths disagree.
        """
        known = {f.name for f in fields(cls)}
        missing = [name for name in SCHEMA_FIELDS if name not in data]
        if missing:
            raise ValueError(f"not an explanation: missing {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in known}
        for key in ("scores", "word_scores"):
            if values.get(key) is not None:
                values[key] = [math.nan if v is None else float(v) for v in values[key]]
        return cls(**values)

    # ----------------------------------------------------------------------- rendering

    @property
    def explains_prediction(self) -> bool:
        """Whether the explained class (or label set) is the predicted one, the whole of it."""
        return self.target == self.predicted

    def title(self) -> str:
        """``method: target (p=…)``, plus the prediction when the target is another class or set."""
        title = f"{self.method}: {self.target_label} (p={self.target_probability:.2f})"
        if not self.explains_prediction:
            title += f"; predicted {self.predicted_label} (p={self.probability:.2f})"
        return title

    def plot(
        self, *, words: bool | None = None, per_row: int = 12, save: PathLike | None = None
    ) -> Any:
        """A heatmap of the words (or tokens) coloured by score: red for, blue against.

        Args:
            words: show the words (default: when the explanation has them) or the tokens.
            per_row: pieces per row before wrapping.
            save: a PNG path to write.

        Returns:
            The ``matplotlib.figure.Figure``.
        """
        units, scores = self.units(words)
        unit = "words" if (self.words is not None if words is None else words) else "tokens"
        return plot_token_heatmap(
            units, scores, per_row=per_row, title=self.title(), unit=unit, save=save
        )

    def to_html(self, *, words: bool | None = None, legend: bool = False) -> str:
        """An HTML fragment, every piece of text escaped (wrap pages with :func:`html_page`).

        Args:
            words: show the words (default: when the explanation has them) or the tokens.
            legend: append the colour legend.
        """
        units, scores = self.units(words)
        use_words = self.words is not None if words is None else words
        meta = [f"{self.method} explains {self.target_label} (p={self.target_probability:.2f})"]
        if not self.explains_prediction:
            meta.append(f"predicted {self.predicted_label} (p={self.probability:.2f})")
        meta.append(f"model {self.model}")
        if self.layer:
            meta.append(f"layer {self.layer}")
        if self.truncated:
            meta.append("truncated to the model's token budget")
        header = " · ".join(html.escape(m, quote=True) for m in meta)
        if self.id is not None:
            header = f"<b>#{html.escape(str(self.id), quote=True)}</b> · {header}"
        prefix = "##"
        if use_words:
            # Words written without a space before them (punctuation, "isn" "'" "t") are
            # shown glued to the previous word, as in the text.
            prefix = _GLUE
            units = [
                _GLUE + u if glued else u for u, glued in zip(units, self._glued(), strict=True)
            ]
        body = render_html(units, scores, subword_prefix=prefix, legend=legend)
        return f'<div class="cls-item"><div class="meta">{header}</div>{body}</div>'

    def _glued(self) -> list[bool]:
        """Per word: does it follow the previous word with no space between them?"""
        glued, cursor = [], 0
        sources = [self.text, self.text_pair or ""]
        source = 0
        for word in self.words or []:
            found = sources[source].find(word, cursor)
            if found < 0 and source == 0 and self.text_pair is not None:
                source, cursor = 1, 0  # the pair's words follow the text's
                found = sources[1].find(word)
                glued.append(False)
            else:
                glued.append(found > 0 and found == cursor)
            cursor = found + len(word) if found >= 0 else cursor
        return glued

    def to_visualization_record(self, *, words: bool | None = None, true_label: Any = "") -> Any:
        """Captum's ``VisualizationDataRecord`` for ``visualize_text``, with every field right.

        Captum's colour function clips scores to ``[-1, 1]``; the scores are divided by their
        largest magnitude so that the strongest piece is fully coloured (``attr_score`` keeps
        the unscaled total). Captum draws positive scores green and negative red (our
        renderers: red and blue). Render it with
        :func:`captum_layer_saliency.viz.safe_visualize_text`, which escapes the text: Captum's
        own ``visualize_text`` would put a ``<script>`` in a text straight into the page.

        Args:
            words: use the words (default: when the explanation has them) or the tokens.
            true_label: the gold label, when known (Captum prints it; default empty).

        Returns:
            A ``captum.attr.visualization.VisualizationDataRecord``: ``word_attributions``
            ``(n,)`` float32 in ``[-1, 1]``, ``pred_prob``/``pred_class`` the prediction's
            probability and name, ``attr_class`` the explained class's name (label sets by
            their names joined by ``"+"``, the probability theirs: Captum prints the names and
            the number as they are), ``attr_score`` the sum of the scores,
            ``raw_input_ids`` the ``n`` words or tokens (not escaped).
        """
        units, scores = self.units(words)
        bound = max((abs(s) for s in scores if math.isfinite(s)), default=0.0) or 1.0
        return visualization.VisualizationDataRecord(
            torch.tensor([s / bound if math.isfinite(s) else 0.0 for s in scores]),
            float(self.probability),
            self.predicted_label,
            true_label,
            self.target_label,
            float(sum(s for s in scores if math.isfinite(s))),
            units,
            None,
        )


#: The keys every line of ``explanations.jsonl`` has (others are optional).
SCHEMA_FIELDS = (
    "text",
    "tokens",
    "scores",
    "predicted",
    "predicted_label",
    "probability",
    "target",
    "target_label",
    "target_probability",
    "method",
    "model",
    "version",
)


def _class_or_set(value: Any, name: str) -> int | list[int]:
    """A class index as an int, or a label set as a sorted list of ints (checked)."""
    try:
        if isinstance(value, (list, tuple)) and value:
            return sorted(_index(v) for v in value)
        return _index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a class index or a non-empty list of label indices, got {value!r}"
        ) from None


def _index(value: Any) -> int:
    """An integer (a numpy or torch integer too), refusing bools and floats."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a class index")
    return operator.index(value)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _looks_special(token: str) -> bool:
    return len(token) > 2 and token[0] in "[<" and token[-1] in "]>"


def save_explanations(
    path: PathLike, explanations: Iterable[Explanation], *, append: bool = False
) -> Path:
    """Write explanations as JSON Lines (one object per line, :meth:`Explanation.to_dict`).

    Durably: an append is one fsync-ed write; a rewrite replaces ``path`` only when complete.

    Args:
        path: the file.
        explanations: what to write.
        append: add to the file instead of replacing it.

    Returns:
        The path.
    """
    target = Path(path)
    lines = [
        json.dumps(explanation.to_dict(), ensure_ascii=False, allow_nan=False)
        for explanation in explanations
    ]
    if append:
        append_durably(target, lines)
    else:
        text = "".join(line + "\n" for line in lines)
        atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return target


_STR, _NUM, _NONE = (str,), (int, float), (type(None),)
#: Each field's JSON types when present, and its items' types for a list: ``tokens`` a list of
#: strings, ``probability`` a number or ``null`` (a non-finite one), ...
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], tuple[type, ...] | None]] = {
    **dict.fromkeys(("text", "predicted_label", "target_label", "method", "model"), (_STR, None)),
    **dict.fromkeys(("text_pair", "word_reduce", "layer"), (_STR + _NONE, None)),
    **dict.fromkeys(("probability", "target_probability"), (_NUM + _NONE, None)),
    "version": (_STR, None),
    "tokens": ((list,), _STR),
    "scores": ((list,), _NUM + _NONE),
    "words": ((list, type(None)), _STR),
    "word_scores": ((list, type(None)), _NUM + _NONE),
    "token_words": ((list, type(None)), (int,)),
    "truncated": ((bool,), None),
    "id": (_STR + (int,) + _NONE, None),
    "options": ((dict,), None),
}


def _check_types(data: Any) -> None:
    """Refuse a line whose fields have the wrong JSON types (``tokens`` a string, ...)."""
    if not isinstance(data, dict):
        raise ValueError(f"not an explanation: a JSON {type(data).__name__}, not an object")
    for key, (kinds, items) in _FIELD_TYPES.items():
        value = data.get(key)
        checked = [value] if key in data else []
        if items is not None and isinstance(value, list):
            checked += value
        for i, item in enumerate(checked):
            allowed = kinds if i == 0 else items or ()
            if not isinstance(item, allowed) or (isinstance(item, bool) and bool not in allowed):
                raise ValueError(f"field {key!r} holds a {type(item).__name__}: {item!r:.60}")


def load_explanations(path: PathLike, *, skip_partial_last: bool = False) -> list[Explanation]:
    """Read the explanations of a JSON Lines file written by :func:`save_explanations`.

    Every line is checked: the schema's fields, their types (``tokens`` a list of strings,
    ``probability`` a number...) and lengths; a line nested too deeply to parse is refused.

    Args:
        path: the file.
        skip_partial_last: ignore an unparsable *last* line (a write cut short by an
            interruption), as resuming does.

    Returns:
        The explanations, in file order.

    Raises:
        ExplanationFileError: an unreadable file or a line that is not an explanation.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplanationFileError(f"cannot read {str(file)!r}: {exc}") from None
    out = []
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    for position, (number, line) in enumerate(numbered):
        try:
            data = json.loads(line)
            _check_types(data)
            out.append(Explanation.from_dict(data))
        except RecursionError:
            raise ExplanationFileError(
                f"{file}: line {number}: nested too deeply to be an explanation"
            ) from None
        except (ValueError, TypeError) as exc:
            if skip_partial_last and position == len(numbered) - 1:
                break
            raise ExplanationFileError(f"{file}: line {number}: {exc}") from None
    return out


def explanations_html(
    explanations: Sequence[Explanation],
    *,
    title: str = "Explanations",
    words: bool | None = None,
    images: Sequence[str | None] | None = None,
) -> str:
    """A standalone, escaped HTML page of explanations (with a script-forbidding CSP).

    Args:
        explanations: the explanations.
        title: the page title (escaped).
        words: show words or tokens (default: each explanation's words when it has them).
        images: optional relative PNG paths, one per explanation (``None`` for none), shown
            under each text.
    """
    parts = []
    for i, explanation in enumerate(explanations):
        parts.append(explanation.to_html(words=words))
        image = images[i] if images is not None else None
        if image:
            parts.append(f'<img src="{html.escape(image, quote=True)}" style="max-width:100%">')
    return html_page(parts, title=title)
