"""benchmarks/reproduce_naopc.py offline: a tiny local BERT saved with save_pretrained, a tiny
data file, and a published file equal to our own results (so the differences must be 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import benchmark_script, tiny_bert_config
from transformers import BertForSequenceClassification, BertTokenizer


def test_runs_offline_and_matches_a_published_copy_of_itself(
    tiny_tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    script = benchmark_script("reproduce_naopc")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(tiny_bert_config()).eval()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    texts = ["the movie was very good", "boring .", "a great film"]
    data = tmp_path / "data.csv"
    pd.DataFrame({"id": [0, 1, 2], "text": texts, "label": [1, 0, 1]}).to_csv(data)
    empty = tmp_path / "empty.csv"
    columns = ["id", "explanation_method", "comprehensiveness", "sufficiency"]
    pd.DataFrame(columns=columns).to_csv(empty)
    args = ["--model", str(tmp_path / "model"), "--data", str(data), "--out", str(tmp_path)]
    first = script.main([*args, "--published", str(empty)])
    assert first["decompx"]["n"] == 0
    ours = json.loads((tmp_path / "reproduce_naopc.json").read_text())["per_example"]
    rows = [
        {"id": i, "explanation_method": theirs, "comprehensiveness": c, "sufficiency": s}
        for name, (_, theirs) in script.METHODS.items()
        for i, c, s in zip(ours[name]["id"], ours[name]["comp"], ours[name]["suff"], strict=True)
    ]
    published = tmp_path / "published.csv"
    pd.DataFrame(rows).to_csv(published)
    summary = script.main([*args, "--published", str(published)])
    for name in script.METHODS:
        assert summary[name]["n"] == 3
        assert summary[name]["comp_mean_abs_diff"] == pytest.approx(0.0, abs=1e-12)
        assert summary[name]["comp_ours"] == pytest.approx(summary[name]["comp_published"])
        assert 0.0 <= summary[name]["naopc_comp_ours"] <= 1.0
