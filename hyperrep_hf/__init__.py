"""hyperrep_hf: hyper-representations of model zoos, in the Hugging Face ecosystem.

Importing the package registers its classes with transformers: ``AutoConfig`` model types ``"hyperrep"`` and
``"hyperrep_probe"``, ``AutoModel`` → :class:`HyperRepModel`, ``AutoModelForPreTraining`` →
:class:`HyperRepForPreTraining`, ``AutoFeatureExtractor`` → :class:`NeuronTokenProcessor`, and the pipeline task
``"network-property-prediction"``.
"""

import os

# PyTorch reads this once, at its first CPU allocation: large CPU tensors then come in transparent huge pages, which
# a zoo build's per-step activations (hundreds of MB, freed and re-allocated every step) need to avoid a page fault
# every 4 KB (with population.tune_cpu_allocator, 1.4–1.9× per training step; docs/benchmarks.md). A user's own
# setting wins; no effect when torch allocated before this import.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .models.hyperrep.configuration_hyperrep import HyperRepConfig
from .models.hyperrep.modeling_hyperrep import (
    HyperRepForPreTraining,
    HyperRepForPreTrainingOutput,
    HyperRepModel,
    HyperRepModelOutput,
    make_position_ids,
    make_value_mask,
)
from .models.hyperrep.pipelines import NetworkPropertyPredictionPipeline, register_pipeline
from .models.hyperrep.processing_hyperrep import NeuronTokenProcessor, register_processor
from .probing.probe_heads import HyperRepProbeConfig, HyperRepProbeModel, register_probe_heads
from .probing.probes import reconstruction_r2
from .zoo.folder import build_zoo, load_zoo
from .zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module
from .zoo.recipes import BuildOptions, list_recipes, load_recipe

__version__ = "0.1.0"

AutoConfig.register("hyperrep", HyperRepConfig, exist_ok=True)
AutoModel.register(HyperRepConfig, HyperRepModel, exist_ok=True)
AutoModelForPreTraining.register(HyperRepConfig, HyperRepForPreTraining, exist_ok=True)
register_processor(HyperRepConfig)
register_probe_heads()
register_pipeline()

__all__ = [
    "MNIST_CNN",
    "SMALL_CNN_ZOO",
    "TETRIS_MLP",
    "BuildOptions",
    "HyperRepConfig",
    "HyperRepForPreTraining",
    "HyperRepForPreTrainingOutput",
    "HyperRepModel",
    "HyperRepModelOutput",
    "HyperRepProbeConfig",
    "HyperRepProbeModel",
    "NetworkPropertyPredictionPipeline",
    "NetworkSpec",
    "NeuronTokenProcessor",
    "__version__",
    "build_zoo",
    "list_recipes",
    "load_recipe",
    "load_zoo",
    "make_module",
    "make_position_ids",
    "make_value_mask",
    "reconstruction_r2",
]
