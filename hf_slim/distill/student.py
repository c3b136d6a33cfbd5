"""Initialise a shallower student from a teacher's own layers (DistilBERT-style)."""

from __future__ import annotations

import copy
import operator
import re

import torch
from transformers import PreTrainedModel

from ..architectures import get_adapter
from ..errors import InvalidLayerMapError


def evenly_spaced_layers(num_teacher_layers: int, num_layers: int) -> list[int]:
    """`num_layers` teacher layers spread evenly from the first to the last, e.g. 3 of 6 -> `[0, 2, 5]`."""
    if num_layers == 1:
        return [num_teacher_layers - 1]
    step = (num_teacher_layers - 1) / (num_layers - 1)
    return [round(i * step) for i in range(num_layers)]


def _validate_layers(layers, num_layers, num_teacher_layers) -> list[int]:
    if layers is None and num_layers is None:
        raise InvalidLayerMapError("init_student_from_teacher needs num_layers= or layers= (teacher layer indices).")
    if num_layers is not None and (not isinstance(num_layers, int) or isinstance(num_layers, bool)):
        raise InvalidLayerMapError(f"num_layers must be an integer, got {num_layers!r}.")
    if layers is None:
        if not 1 <= num_layers <= num_teacher_layers:
            raise InvalidLayerMapError(
                f"num_layers={num_layers} is out of range: the teacher has {num_teacher_layers} layers, so choose "
                f"1 to {num_teacher_layers}."
            )
        return evenly_spaced_layers(num_teacher_layers, num_layers)
    layers = list(layers)
    if not layers:
        raise InvalidLayerMapError("layers is empty; name at least one teacher layer to copy.")
    try:
        if any(isinstance(layer, bool) for layer in layers):
            raise TypeError
        layers = [operator.index(layer) for layer in layers]  # accepts numpy integers, e.g. from argsort
    except TypeError as err:
        raise InvalidLayerMapError(f"layers must be integer layer indices, got {layers!r}.") from err
    bad = [layer for layer in layers if not 0 <= layer < num_teacher_layers]
    if bad:
        raise InvalidLayerMapError(
            f"layers {bad} do not exist: the teacher has {num_teacher_layers} layers (0 to {num_teacher_layers - 1})."
        )
    if len(set(layers)) != len(layers):
        raise InvalidLayerMapError(f"layers {layers} names a layer twice; each teacher layer can be copied once.")
    if num_layers is not None and num_layers != len(layers):
        raise InvalidLayerMapError(f"num_layers={num_layers} disagrees with layers={layers} ({len(layers)} layers).")
    return layers


def init_student_from_teacher(
    teacher: PreTrainedModel, num_layers: int | None = None, layers: list[int] | None = None
) -> PreTrainedModel:
    """Build a student of the teacher's class with fewer layers, copying the teacher's weights.

    The embeddings, the task head and everything outside the layer stack are copied as they are; student layer `i`
    is a copy of teacher layer `layers[i]`. The teacher is not modified. The student's config has the new layer
    count, so `save_pretrained` / `AutoModelFor*.from_pretrained` round-trip with stock transformers.

    Args:
        teacher (`PreTrainedModel`): A model of a supported architecture (see `hf_slim.supported_model_types()`).
        num_layers (`int`, *optional*): Number of layers, chosen evenly spaced from the first to the last teacher
            layer (DistilBERT-style), e.g. 3 of 6 -> teacher layers `[0, 2, 5]`.
        layers (`list[int]`, *optional*): The exact teacher layers to copy, in order.

    Returns:
        `PreTrainedModel`: the student, in the teacher's mode (train/eval) and on the teacher's device and dtype.
    """
    adapter = get_adapter(teacher)
    num_teacher_layers = adapter.num_layers(teacher.config)
    layers = _validate_layers(layers, num_layers, num_teacher_layers)

    config = copy.deepcopy(teacher.config)
    setattr(config, adapter.num_layers_attr, len(layers))
    pruned_heads = getattr(config, "pruned_heads", None)
    if pruned_heads:
        config.pruned_heads = {
            new: pruned_heads[old] for new, old in enumerate(layers) if old in pruned_heads and pruned_heads[old]
        }

    student = type(teacher)(config)
    if pruned_heads and config.pruned_heads and hasattr(student, "prune_heads"):
        # Stock transformers builds unpruned layers and prunes them after load; mirror that so shapes match.
        student.prune_heads({layer: list(heads) for layer, heads in config.pruned_heads.items()})

    teacher_state = teacher.state_dict()
    prefix = re.escape(adapter.layers_prefix(teacher))
    layer_key = re.compile(rf"^{prefix}\.(\d+)\.(.*)$")
    position = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, tensor in teacher_state.items():
        match = layer_key.match(key)
        if match:
            old = int(match.group(1))
            if old in position:
                state[f"{adapter.layers_prefix(teacher)}.{position[old]}.{match.group(2)}"] = tensor
            continue
        if key.rsplit(".", 1)[-1] in adapter.per_layer_parameters and tensor.dim() == 1:
            # Indexed by hidden_states position: 0 = embeddings, i + 1 = output of layer i.
            if tensor.shape[0] == num_teacher_layers + 1:
                tensor = tensor[torch.tensor([0] + [layer + 1 for layer in layers], device=tensor.device)]
        state[key] = tensor
    student.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    student.to(device=next(teacher.parameters()).device, dtype=next(teacher.parameters()).dtype)
    student.train(teacher.training)
    return student
