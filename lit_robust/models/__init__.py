"""Network architectures; each starts with a :class:`Normalize` layer, so inputs are pixels in [0, 1]."""

from lit_robust.models.bias_free import BiasFreeCNN, BiasFreeMLP
from lit_robust.models.bpda import BPDA
from lit_robust.models.convnet import ConvNet
from lit_robust.models.lenet import LeNet
from lit_robust.models.mlp import MLP
from lit_robust.models.normalize import Normalize
from lit_robust.models.preact_resnet import PreActResNet, PreActResNet18
from lit_robust.models.resnet_cifar import CifarResNet, ResNet20, ResNet56
from lit_robust.models.robustbench_model import RobustBenchModel
from lit_robust.models.small_cnn import SmallCNN
from lit_robust.models.taps import Taps
from lit_robust.models.torchvision_model import TorchvisionModel, disable_inplace
from lit_robust.models.transforms import EOT, TotalVariationMinimization
from lit_robust.models.vgg import VGG, VGG11, VGG13, VGG16, VGG19
from lit_robust.models.wide_resnet import WideResNet
from lit_robust.models.wnll_network import TemplateBank, WNLLNetwork

__all__ = [
    "EOT",
    "TotalVariationMinimization",
    "BPDA",
    "BiasFreeCNN",
    "BiasFreeMLP",
    "MLP",
    "VGG",
    "VGG11",
    "VGG13",
    "VGG16",
    "VGG19",
    "CifarResNet",
    "ConvNet",
    "LeNet",
    "Normalize",
    "PreActResNet",
    "PreActResNet18",
    "ResNet20",
    "RobustBenchModel",
    "ResNet56",
    "SmallCNN",
    "Taps",
    "TorchvisionModel",
    "TemplateBank",
    "WideResNet",
    "WNLLNetwork",
    "disable_inplace",
]
