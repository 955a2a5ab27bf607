"""benchmarks/gpu_timing.py on the CPU with a tiny Llama of the same family: every method runs
at every batch size, and the ratios are against Input x Gradient from the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import benchmark_script

TINY = {
    "vocab_size": 60,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
    "pad_token_id": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def test_times_every_method_at_every_batch_size_on_the_cpu(tmp_path: Path) -> None:
    script = benchmark_script("gpu_timing")
    out = tmp_path / "timing.json"
    argv = ["--device", "cpu", "--batch-sizes", "1,3", "--seq-len", "7", "--repeats", "2"]
    record = script.main([*argv, "--out", str(out)], shape=TINY)
    assert json.loads(out.read_text()) == record
    assert record["name"] == "cpu" and record["dls_layer"] == 2 and record["blocks"] == 3
    assert set(record["batches"]) == {"1", "3"}
    for timings in record["batches"].values():
        assert set(timings) == {"dls", "integrated_gradients", "input_x_gradient"}
        assert timings["input_x_gradient"]["x_input_x_gradient"] == 1.0
        assert all(t["seconds"] > 0 for t in timings.values())


def test_refuses_cuda_where_there_is_none(tmp_path: Path) -> None:
    script = benchmark_script("gpu_timing")
    if script.torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    with pytest.raises(SystemExit, match="no CUDA device"):
        script.main(["--device", "cuda", "--out", str(tmp_path / "t.json")], shape=TINY)


def test_smollm2_shape_is_the_published_config() -> None:
    shape = benchmark_script("gpu_timing").SMOLLM2_SHAPE
    assert (shape["num_hidden_layers"], shape["hidden_size"], shape["vocab_size"]) == (
        30,
        576,
        49152,
    )
    assert (shape["num_attention_heads"], shape["num_key_value_heads"]) == (9, 3)
