"""Putting a frozen teacher next to a student under every Accelerate backend.

The teacher is only ever run forward, under `torch.no_grad()`:
- DDP / single device / CPU: `accelerator.prepare_model(teacher, evaluation_mode=True)` places it (and applies
  mixed precision) without a DDP wrapper: a frozen model must not be wrapped (torchdistill #122).
- DeepSpeed: initialised as an inference engine with the training run's DeepSpeed config; under ZeRO-3 its
  parameters are sharded like the student's (as TRL's `prepare_deepspeed`), under ZeRO-0/1/2 it is replicated
  (stage 0). A teacher that is never initialised breaks ZeRO-3 runs (DeepSpeed #3175).
- FSDP: wrapped explicitly with the run's FSDP plugin (FSDP1) or `fully_shard` per transformer layer (FSDP2), then
  set to eval; `prepare_model(evaluation_mode=True)` would skip FSDP and keep a full copy per device (TRL #2580).
"""

from __future__ import annotations

import copy

from torch import nn

from ..architectures import get_adapter


def prepare_teacher(teacher: nn.Module, accelerator) -> nn.Module:
    """Freeze `teacher`, put it in eval mode and prepare it for `accelerator`'s distributed backend."""
    from accelerate.utils import DistributedType

    teacher.requires_grad_(False)
    teacher.eval()
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return _prepare_deepspeed(teacher, accelerator)
    if accelerator.distributed_type == DistributedType.FSDP:
        return _prepare_fsdp(teacher, accelerator)
    return accelerator.prepare_model(teacher, evaluation_mode=True)


def deepspeed_inference_config(ds_config: dict, hidden_size: int | None) -> dict:
    """The teacher's DeepSpeed config: the run's config with ZeRO-3 kept (and its buckets sized for the teacher) or,
    for any other stage, ZeRO disabled (stage 0: a plain replicated inference engine). No optimizer, no scheduler."""
    config = copy.deepcopy(ds_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        if hidden_size:
            zero["reduce_bucket_size"] = hidden_size * hidden_size
            zero["stage3_param_persistence_threshold"] = 10 * hidden_size
            zero["stage3_prefetch_bucket_size"] = int(0.9 * hidden_size * hidden_size)
    else:
        zero["stage"] = 0
    return config


def _prepare_deepspeed(teacher: nn.Module, accelerator) -> nn.Module:
    import deepspeed

    plugin = accelerator.state.deepspeed_plugin
    try:
        hidden = get_adapter(teacher).hidden_size(teacher.config)
    except Exception:
        hidden = getattr(getattr(teacher, "config", None), "hidden_size", None)
    config = deepspeed_inference_config(plugin.deepspeed_config, hidden)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine


def _prepare_fsdp(teacher: nn.Module, accelerator) -> nn.Module:
    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) == 2:
        from torch.distributed.fsdp import fully_shard

        kwargs = {"reshard_after_forward": getattr(plugin, "reshard_after_forward", True)}
        mesh = getattr(accelerator.state, "device_mesh", None)
        if mesh is not None:
            kwargs["mesh"] = mesh
        for layer in get_adapter(teacher).get_layers(teacher):
            fully_shard(layer, **kwargs)
        fully_shard(teacher, **kwargs)
        teacher.eval()
        return teacher
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if isinstance(teacher, FSDP):
        return teacher.eval()
    plugin.set_auto_wrap_policy(teacher)
    wrapped = FSDP(
        teacher,
        sharding_strategy=plugin.sharding_strategy,
        cpu_offload=plugin.cpu_offload,
        auto_wrap_policy=plugin.auto_wrap_policy,
        mixed_precision=plugin.mixed_precision_policy,
        sync_module_states=plugin.sync_module_states,
        backward_prefetch=plugin.backward_prefetch,
        forward_prefetch=plugin.forward_prefetch,
        use_orig_params=plugin.use_orig_params,
        param_init_fn=plugin.param_init_fn,
        ignored_modules=plugin.ignored_modules,
        limit_all_gathers=plugin.limit_all_gathers,
        device_id=accelerator.device,
    )
    wrapped.eval()
    return wrapped
