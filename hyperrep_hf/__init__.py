"""hyperrep_hf: hyper-representations of model zoos, in the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .configuration_hyperrep import HyperRepConfig
from .modeling_hyperrep import (
    HyperRepForPreTraining,
    HyperRepForPreTrainingOutput,
    HyperRepModel,
    HyperRepModelOutput,
    make_position_ids,
    make_value_mask,
    reconstruction_r2,
)
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
__all__ += ["HyperRepConfig", "HyperRepForPreTraining", "HyperRepForPreTrainingOutput", "HyperRepModel"]
__all__ += ["HyperRepModelOutput", "make_position_ids", "make_value_mask", "reconstruction_r2"]

AutoConfig.register("hyperrep", HyperRepConfig, exist_ok=True)
AutoModel.register(HyperRepConfig, HyperRepModel, exist_ok=True)
AutoModelForPreTraining.register(HyperRepConfig, HyperRepForPreTraining, exist_ok=True)

# Probe heads (model_type "hyperrep_probe") and the "network-property-prediction" pipeline.
from .pipelines import NetworkPropertyPredictionPipeline, register_pipeline  # noqa: E402
from .probe_heads import HyperRepProbeConfig, HyperRepProbeModel, register_probe_heads  # noqa: E402

register_probe_heads()
register_pipeline()
__all__ += ["HyperRepProbeConfig", "HyperRepProbeModel", "NetworkPropertyPredictionPipeline"]
