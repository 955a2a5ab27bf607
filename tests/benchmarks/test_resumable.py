"""benchmarks/resumable.py, which frontier.py and layer_methods.py share: the rows file resumes
past a torn last line, refuses another configuration, and the plan covers every row once."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import benchmark_script


def test_open_rows_resumes_past_a_torn_line_and_refuses_another_config(tmp_path: Path) -> None:
    resumable = benchmark_script("resumable")
    config = {"task": "sst2", "batch_size": 8}
    rows_path, done = resumable.open_rows(tmp_path, config, ("task", "batch_size"))
    assert rows_path == tmp_path / "rows.jsonl" and done == set()
    assert json.loads((tmp_path / "config.json").read_text()) == config
    with rows_path.open("a") as sink:
        resumable.append_row(sink, {"batch": 0})
        resumable.append_row(sink, {"batch": 2})
        sink.write('{"batch": 1')  # torn
    _, done = resumable.open_rows(tmp_path, {**config, "n_texts": 3}, ("task", "batch_size"))
    assert done == {0, 2}
    with pytest.raises(SystemExit, match="another configuration"):
        resumable.open_rows(tmp_path, {**config, "batch_size": 4}, ("task", "batch_size"))


def test_plan_covers_every_row_once_chunk_by_chunk() -> None:
    resumable = benchmark_script("resumable")
    texts = ["a " * n for n in (5, 1, 3, 8, 2, 7, 4)]
    plan = resumable.plan_batches(texts, 3, 2)
    assert sorted(i for batch in plan for i in batch) == list(range(len(texts)))
    chunks = [{i // 3 for i in batch} for batch in plan]
    assert all(len(c) == 1 for c in chunks)  # no batch crosses a chunk
    assert [c.pop() for c in chunks] == sorted(i // 3 for batch in plan for i in batch[:1])


@pytest.mark.parametrize("name", ["frontier", "layer_methods"])
def test_the_benchmarks_import_the_shared_module(name: str) -> None:
    module = benchmark_script(name)
    assert module.resumable is sys.modules["resumable"]
    assert os.environ["HF_HUB_OFFLINE"] and os.environ["HF_DATASETS_OFFLINE"]


def test_a_layer_sweep_compares_every_layer_with_the_selected_one() -> None:
    reference = benchmark_script("layer_methods").dls_reference
    sweep = {"variants": "layers:0,1,2,9", "selected_layers": ["model.layers.1"]}
    assert reference(sweep) == "dls_ig1_at_2"  # Llama's model.layers.1 is block 2
    assert reference({**sweep, "selected_layers": ["bert.encoder.layer.4"]}) == "dls_ig1_at_5"
    assert reference({"variants": "tune", "selected_layers": ["model.layers.1"]}) == "dls"
    assert reference({}) == "dls"
