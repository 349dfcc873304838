"""Stage 3, self-supervised training: ``TrainConfig`` and the Accelerate trainer (``trainer``)."""

from .trainer import TrainConfig, main, make_train_config, train

__all__ = ["TrainConfig", "main", "make_train_config", "train"]
