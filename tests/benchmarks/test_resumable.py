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


def _frontier_run(path: Path, task: str, indices: list[list[int]], methods: list[str]) -> Path:
    metrics = benchmark_script("frontier").METRICS
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"task": task, "split": "test"}))
    rows = []
    for batch, index in enumerate(indices):
        values = {m: [float(i) for i in index] for m in metrics}
        scored = {m: {"seconds": 1.0 + k, **values} for k, m in enumerate(methods)}
        rows.append({"batch": batch, "index": index, "exact_bounds": [False] * len(index),
                     "methods": scored})  # fmt: skip
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_frontier_pools_slices_of_one_dataset(tmp_path: Path) -> None:
    frontier = benchmark_script("frontier")
    a = _frontier_run(tmp_path / "a", "sst2", [[0, 1], [2]], ["dls", "attnlrp", "input_x_gradient"])
    b = _frontier_run(tmp_path / "b", "sst2", [[3, 4]], ["dls", "input_x_gradient", "loo"])
    frontier.pool([a, b], tmp_path / "pooled")
    rows = [json.loads(x) for x in (tmp_path / "pooled" / "rows.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in rows] == [0, 1, 2]
    assert [r["index"] for r in rows] == [[0, 1], [2], [3, 4]]
    assert all(list(r["methods"]) == ["dls", "input_x_gradient"] for r in rows)
    summary = frontier.summarise(tmp_path / "pooled")
    assert summary["n"] == 5
    assert summary["methods"]["dls"]["eraser_comprehensiveness"] == pytest.approx(2.0)
    # Seconds per example: dls 1.0 everywhere; input_x_gradient 3.0 on a's 3 examples and 2.0 on
    # b's 2, so 13 / 5 = 2.6 on average.
    assert summary["methods"]["dls"]["cost_vs_ixg"] == pytest.approx(1.0 / 2.6)
    with pytest.raises(SystemExit, match=r"examples \[1\] twice"):
        frontier.pool([a, _frontier_run(tmp_path / "c", "sst2", [[1]], ["dls"])], tmp_path / "x")
    with pytest.raises(SystemExit, match="different tasks"):
        frontier.pool([a, _frontier_run(tmp_path / "d", "ag_news", [[9]], ["dls"])], tmp_path / "y")
