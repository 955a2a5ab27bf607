"""Scale-out and crash safety end to end, in real processes on a tiny model saved to disk.

* two CPU ranks under ``torchrun`` (gloo) merge into exactly the rows of a one-process run, and
  resume a shard that an earlier run left half-written;
* a comparison killed with SIGKILL in the middle of writing a row, then restarted, ends with
  exactly the rows of an uninterrupted run.

The one-process reference runs in this process (no interpreter start-up to pay); the others are
subprocesses with one intra-op thread, like the reference, so the floating point is the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from compare_fakes import TEXTS, stable
from conftest import VOCAB, tiny_bert_config
from transformers import BertForMaskedLM, BertForSequenceClassification, BertTokenizer

from captum_layer_saliency.cli import app as cli
from captum_layer_saliency.compare import load_rows
from captum_layer_saliency.compare import results as results_mod
from captum_layer_saliency.compare.distributed import (
    DistributedSetupError,
    RankInfo,
    check_shards_visible,
    rank_device,
    torchrun_rank,
)

REPO = Path(__file__).resolve().parents[2]
N_EXAMPLES = 12
#: Real methods (one of them DLS, through --lm-head) and the cheap AOPC metrics.
METHODS = "dls,ixg"
METRICS = "comprehensiveness,sufficiency"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny classifier, its masked LM (the DLS head) and a JSONL data file, on disk."""
    root = tmp_path_factory.mktemp("saved")
    config = tiny_bert_config()
    config.id2label = {0: "negative", 1: "positive"}
    config.label2id = {"negative": 0, "positive": 1}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clf = BertForSequenceClassification(config).eval()
        mlm = BertForMaskedLM(config).eval()
    mlm.bert.load_state_dict(clf.bert.state_dict(), strict=False)
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)
    for model, name in ((clf, "clf"), (mlm, "mlm")):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    words = " ".join(TEXTS).split()
    lines = [
        json.dumps({"idx": 10 + i, "text": " ".join(words[i : i + 2 + i % 9]), "label": i % 2})
        for i in range(N_EXAMPLES)
    ]
    (root / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"clf": root / "clf", "mlm": root / "mlm", "data": root / "data.jsonl"}


def _args(saved: dict[str, Path], out: Path) -> list[str]:
    return [
        "compare", "--data-file", str(saved["data"]), "--model", str(saved["clf"]),
        "--lm-head", str(saved["mlm"]), "--methods", METHODS, "--metrics", METRICS,
        "--batch-size", "2", "--out", str(out), "--no-progress", "--device", "cpu",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    """The children's environment: offline, one thread per pool, gloo on the loopback device.

    On a loaded two-core machine two ranks with default thread pools (OpenMP, MKL, the Rust
    tokenizer's) oversubscribe the cores many times over, and gloo, left to pick an interface
    from the host name, may choose one the other rank reaches slowly or not at all; both made
    the two-rank run abort (SIGABRT) there. Everything here is local, so the loopback device
    is the right one.
    """
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _rows(out: Path) -> list[dict[str, Any]]:
    return [stable(r) for r in load_rows(out)]


@pytest.fixture(scope="module")
def reference(saved: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted one-process run, through the CLI in this process."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli.main(_args(saved, out)) == 0
    assert len(load_rows(out)) == N_EXAMPLES * 2
    return out


def test_two_cpu_ranks_under_torchrun_equal_one_process_row_for_row(
    saved: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    out.mkdir()
    # An earlier run of rank 1 was interrupted: a few rows, then a torn line. Rank 1 must repair
    # its own file and every rank must skip the rows already there (per-shard resume).
    lines = (reference / results_mod.ROWS_FILE).read_text("utf-8").splitlines()
    partial = "\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2]
    (out / "rows.rank1.jsonl").write_text(partial, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "captum_layer_saliency", *_args(saved, out)[:-2]],  # --device auto: CPU here
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{proc.stderr[-6000:]}"
    assert not list(out.glob("rows.rank*.jsonl"))  # rank 0 merged them
    assert _rows(out) == _rows(reference)
    assert (out / "report.html").is_file() and (out / "summary.md").is_file()
    assert proc.stdout.count("report:") == 1  # only rank 0 speaks
    assert "Traceback" not in proc.stderr
    assert "duplicate" not in proc.stderr  # the seeded rows were skipped, not recomputed


# The kill test's child: the CLI, but the 5th row is written only in part (flushed to disk) and the
# process then waits to be killed, so SIGKILL lands in the middle of a write, every time.
_KILLABLE = """
import os, sys, time
import captum_layer_saliency.compare.results as results
marker, argv = sys.argv[1], sys.argv[2:]
original, written = results.RowWriter.write, [0]
def write(self, row):
    if written[0] == 4:
        line = results.dumps_row(row)
        self._fh.write(line[: len(line) // 2])
        self._fh.flush()
        os.fsync(self._fh.fileno())
        open(marker, "w").close()
        time.sleep(600)
    original(self, row)
    written[0] += 1
results.RowWriter.write = write
from captum_layer_saliency.cli.app import main
raise SystemExit(main(argv))
"""


def test_sigkill_mid_write_then_restart_gives_the_uninterrupted_rows(
    saved: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out, marker = tmp_path / "killed", tmp_path / "mid-write"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(marker), *_args(saved, out)],
        env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child never reached its 5th row"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()
    text = (out / results_mod.ROWS_FILE).read_text("utf-8")
    assert text.count("\n") == 4 and not text.endswith("\n")  # 4 rows and a torn 5th

    with pytest.warns(UserWarning, match="damaged last line"):
        assert cli.main(_args(saved, out)) == 0
    assert _rows(out) == _rows(reference)
    lines = (out / results_mod.ROWS_FILE).read_text("utf-8").splitlines()
    keys = [results_mod.row_key(json.loads(line)) for line in lines]
    assert len(keys) == len(set(keys)) == N_EXAMPLES * 2  # nothing written twice


def test_torchrun_environment_is_parsed_and_checked() -> None:
    assert torchrun_rank({}) is None
    info = torchrun_rank({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert info == RankInfo(1, 2, 1) and info.shard == (1, 2) and not info.is_main
    with pytest.raises(DistributedSetupError, match="inconsistent"):
        torchrun_rank({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(DistributedSetupError, match="not integers"):
        torchrun_rank({"RANK": "x", "WORLD_SIZE": "2"})
    assert rank_device(RankInfo(0, 1, 0), "cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert rank_device(RankInfo(0, 1, 0), "auto") == torch.device("cpu")
        with pytest.raises(DistributedSetupError, match="CUDA is not available"):
            rank_device(RankInfo(0, 1, 0), "cuda")


def test_merging_without_a_shared_file_system_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "rows.rank0.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DistributedSetupError, match=r"rank\(s\) \[1\].*shared by every node"):
        check_shards_visible(tmp_path, 2)
    (tmp_path / "rows.rank1.jsonl").write_text("", encoding="utf-8")
    check_shards_visible(tmp_path, 2)
