"""Teacher preparation per Accelerate backend. DDP/CPU runs for real; DeepSpeed and FSDP cannot run on this CPU-only
machine (no deepspeed, no GPU), so their code paths are exercised with recording stand-ins for the backend calls."""

import sys
import types

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tiny_models import build_model

from hf_slim.distill import teacher as teacher_module
from hf_slim.distill.teacher import deepspeed_inference_config, prepare_teacher


def test_single_process_teacher_is_frozen_in_eval_and_not_wrapped():
    teacher = build_model("bert", num_layers=2).train()
    prepared = prepare_teacher(teacher, Accelerator(cpu=True))
    assert not isinstance(prepared, torch.nn.parallel.DistributedDataParallel)
    assert not prepared.training and not any(p.requires_grad for p in prepared.parameters())
    assert next(prepared.parameters()).device.type == "cpu"


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_deepspeed_config_below_zero3_becomes_a_plain_replica(stage):
    run = {"zero_optimization": {"stage": stage}, "optimizer": {"type": "AdamW"}, "train_batch_size": 8}
    config = deepspeed_inference_config(run, hidden_size=32)
    assert config["zero_optimization"]["stage"] == 0
    assert "optimizer" not in config and config["train_batch_size"] == 8
    assert run["zero_optimization"]["stage"] == stage and "optimizer" in run  # the run's config is untouched


def test_deepspeed_zero3_config_keeps_sharding_sized_for_the_teacher():
    config = deepspeed_inference_config({"zero_optimization": {"stage": 3}, "scheduler": {}}, hidden_size=32)
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and "scheduler" not in config
    assert zero["reduce_bucket_size"] == 32 * 32
    assert zero["stage3_param_persistence_threshold"] == 320
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 32 * 32)


def _fake_accelerator(kind, **state):
    return types.SimpleNamespace(
        distributed_type=kind, state=types.SimpleNamespace(**state), device=torch.device("cpu")
    )


def test_deepspeed_teacher_is_initialised_as_an_inference_engine(monkeypatch):
    calls = []

    class Engine(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.module = model

    def initialize(model, config):
        calls.append(config)
        return Engine(model), None, None, None

    monkeypatch.setitem(sys.modules, "deepspeed", types.SimpleNamespace(initialize=initialize))
    plugin = types.SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}, "optimizer": {}})
    teacher = build_model("vit", num_layers=2, hidden=32).train()
    engine = prepare_teacher(teacher, _fake_accelerator(DistributedType.DEEPSPEED, deepspeed_plugin=plugin))
    assert isinstance(engine, Engine) and not engine.training and not engine.module.training
    assert calls[0]["zero_optimization"]["stage"] == 3 and calls[0]["zero_optimization"]["reduce_bucket_size"] == 1024
    assert not any(p.requires_grad for p in teacher.parameters())


def test_fsdp1_teacher_is_wrapped_with_the_run_plugin(monkeypatch):
    recorded = {}

    class FakeFSDP(torch.nn.Module):
        def __init__(self, module, **kwargs):
            super().__init__()
            self.module = module
            recorded.update(kwargs)

    import torch.distributed.fsdp as fsdp

    monkeypatch.setattr(fsdp, "FullyShardedDataParallel", FakeFSDP)
    plugin = types.SimpleNamespace(
        fsdp_version=1, sharding_strategy="FULL_SHARD", cpu_offload=None, auto_wrap_policy=None,
        mixed_precision_policy=None, sync_module_states=True, backward_prefetch=None, forward_prefetch=False,
        use_orig_params=True, param_init_fn=None, ignored_modules=None, limit_all_gathers=True,
        set_auto_wrap_policy=lambda model: None,
    )  # fmt: skip
    teacher = build_model("bert", num_layers=2).train()
    wrapped = prepare_teacher(teacher, _fake_accelerator(DistributedType.FSDP, fsdp_plugin=plugin))
    assert isinstance(wrapped, FakeFSDP) and not wrapped.training
    assert recorded["sharding_strategy"] == "FULL_SHARD" and recorded["device_id"] == torch.device("cpu")
    assert recorded["use_orig_params"] is True


def test_fsdp2_shards_every_transformer_layer_then_the_root(monkeypatch):
    sharded = []
    import torch.distributed.fsdp as fsdp

    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kwargs: sharded.append((module, kwargs)))
    plugin = types.SimpleNamespace(fsdp_version=2, reshard_after_forward=True)
    teacher = build_model("wav2vec2", num_layers=3).train()
    prepared = prepare_teacher(teacher, _fake_accelerator(DistributedType.FSDP, fsdp_plugin=plugin, device_mesh=None))
    layers = list(teacher.wav2vec2.encoder.layers)
    assert [m for m, _ in sharded] == [*layers, teacher]
    assert prepared is teacher and not teacher.training
    assert teacher_module.get_adapter(teacher).get_layers(teacher)[0] is layers[0]


def test_config_runs_on_cpu_when_the_machine_has_no_accelerator(tmp_path, monkeypatch):
    from hf_slim import DistillationConfig
    from hf_slim.distill import config as config_module

    monkeypatch.setattr(config_module, "_has_accelerator", lambda: False)
    assert DistillationConfig(output_dir=str(tmp_path), report_to=[]).use_cpu is True
    monkeypatch.setattr(config_module, "_has_accelerator", lambda: True)
    assert DistillationConfig(output_dir=str(tmp_path), report_to=[]).use_cpu is False
