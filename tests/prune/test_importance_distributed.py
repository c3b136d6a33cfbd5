"""Importance scores under torch.distributed: two real processes (gloo) score their own shard, and both get the
scores of the whole data set, identical to one process scoring everything."""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader
from transformers import default_data_collator

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from tiny_models import build_model, make_dataset  # noqa: E402

from hf_slim.prune.importance import gate_scores, layer_importance  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(rank: int, world: int):
    dataset = make_dataset("bert", num_rows=16)
    return DataLoader(dataset.shard(world, rank, contiguous=True), batch_size=4, collate_fn=default_data_collator)


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_model("bert", num_layers=2)
        heads, ffn, layers = gate_scores(model, _shard(rank, world), layers=True)
        influence = layer_importance(model, _shard(rank, world))
        torch.save(
            {"heads": heads, "ffn": ffn, "layers": layers, "influence": influence},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_scores_are_reduced_across_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    model = build_model("bert", num_layers=2)
    heads, ffn, layers = gate_scores(model, _shard(0, 1), layers=True)
    influence = layer_importance(model, _shard(0, 1))
    for result in ranks:
        for got, want in zip(result["heads"] + result["ffn"], heads + ffn, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(result["layers"], layers, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(result["influence"], influence, rtol=1e-5, atol=1e-9)
    # Identical decisions on every process.
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["heads"], ranks[1]["heads"], strict=True))
