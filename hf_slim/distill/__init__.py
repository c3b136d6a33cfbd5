from .augment import augment_texts
from .cache import cache_teacher_logits
from .config import DistillationConfig, uniform_layer_map
from .losses import attention_loss, hidden_state_loss, kd_loss
from .student import evenly_spaced_layers, init_student_from_teacher
from .trainer import DistillationTrainer

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "attention_loss",
    "augment_texts",
    "cache_teacher_logits",
    "evenly_spaced_layers",
    "hidden_state_loss",
    "init_student_from_teacher",
    "kd_loss",
    "uniform_layer_map",
]
