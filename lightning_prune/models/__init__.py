"""Reference models: the ``Classifier`` LightningModule and small backbones."""

from lightning_prune.models.backbones import MLP, SmallCNN, cifar_resnet18
from lightning_prune.models.classifier import Classifier, batch_weights

__all__ = ["MLP", "Classifier", "SmallCNN", "batch_weights", "cifar_resnet18"]
