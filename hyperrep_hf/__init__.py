"""hyperrep_hf: hyper-representations of model zoos, in the Hugging Face ecosystem."""

from .networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module
from .processing_hyperrep import NeuronTokenProcessor, register_processor

try:  # the model config is written alongside; without it the processor registers under the key "hyperrep"
    from .configuration_hyperrep import HyperRepConfig as _ProcessorConfigClass
except ImportError:
    _ProcessorConfigClass = None
register_processor(_ProcessorConfigClass)

__version__ = "0.1.0"

__all__ = ["MNIST_CNN", "SMALL_CNN_ZOO", "TETRIS_MLP", "NetworkSpec", "__version__", "make_module"]
__all__ += ["NeuronTokenProcessor"]
