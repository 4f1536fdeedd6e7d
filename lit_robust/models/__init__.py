"""Network architectures; each starts with a :class:`Normalize` layer, so inputs are pixels in [0, 1]."""

from lit_robust.models.bpda import BPDA
from lit_robust.models.lenet import LeNet
from lit_robust.models.mlp import MLP
from lit_robust.models.normalize import Normalize
from lit_robust.models.small_cnn import SmallCNN
from lit_robust.models.taps import Taps

__all__ = ["BPDA", "LeNet", "MLP", "Normalize", "SmallCNN", "Taps"]
