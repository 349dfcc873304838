"""hyperrep_hf: hyper-representations of model zoos, in the Hugging Face ecosystem."""

from .networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module

__version__ = "0.1.0"

__all__ = ["MNIST_CNN", "SMALL_CNN_ZOO", "TETRIS_MLP", "NetworkSpec", "__version__", "make_module"]
