"""Small reference backbones: an MLP for tabular data, a CNN for 8x8 digits and the CIFAR variant of ResNet-18."""

from __future__ import annotations

import torchvision
from torch import Tensor, nn


class MLP(nn.Module):
    """A multi-layer perceptron for feature vectors: ``Linear-BatchNorm-ReLU`` blocks, then ``self.fc``.

    Args:
        in_features: input features.
        num_classes: number of output logits.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, depth: int = 2) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 2 or hidden < 1 or depth < 1:
            raise ValueError(
                f"MLP needs in_features >= 1, num_classes >= 2, hidden >= 1 and depth >= 1; got {in_features}, "
                f"{num_classes}, {hidden}, {depth}."
            )
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x.flatten(1)))


class SmallCNN(nn.Module):
    """A small CNN for tiny images (default: 1x8x8 scikit-learn digits).

    Two 3x3 conv blocks, a 2x2 max-pool, a third conv block, global average pooling and a final
    ``nn.Linear`` (``self.fc``), whose input the feature-based collectors read.

    Args:
        num_classes: number of output logits.
        in_channels: input channels (1 for digits).
        width: channels of the first conv blocks; the last one has twice as many.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if num_classes < 2 or in_channels < 1 or width < 1:
            raise ValueError(
                f"SmallCNN needs num_classes >= 2, in_channels >= 1 and width >= 1; got {num_classes}, "
                f"{in_channels}, {width}."
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32x32 inputs, as in the pruning papers' code.

    The 7x7 stride-2 stem convolution becomes a 3x3 stride-1 one and the stem max-pool is removed,
    so the first stage works at full 32x32 resolution. The final layer is ``model.fc``.
    """
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
