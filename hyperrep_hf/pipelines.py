"""The ``"network-property-prediction"`` pipeline: a network's weights → its predicted properties.

```
 network(s) ──NeuronTokenProcessor──► tokens ──HyperRepModel──► z ──probe heads (probes/<zoo>/…)──► properties
 (nn.Module, state_dict, .safetensors path, flat vector; or a list of them)
```

``import hyperrep_hf`` registers the task, so after it::

    predict = pipeline("network-property-prediction", model="path/to/model_folder")
    predict(network)
    # {"test_accuracy": {"value": 0.91, "validation_r2": 0.93},
    #  "activation": {"value": "tanh", "probabilities": {"relu": 0.1, "tanh": 0.9}, "validation_accuracy": 0.9}, …}

The model folder must hold probe heads (``hyperrep evaluate`` writes them); :func:`predict_networks` is the
library side of ``hyperrep predict MODEL FILE…``.

This file travels to the Hub as remote code (``config.json``'s ``custom_pipelines``), so it only imports torch,
numpy, transformers and flat sibling files: without hyperrep_hf installed,
``pipeline("network-property-prediction", model="org/name", trust_remote_code=True)`` loads it from the repo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .embeddings import embed_vectors, symmetry_transforms
from .modeling_hyperrep_probe import HyperRepProbeModel, ProbesNotFoundError, load_probe_heads, read_probe_index

TASK = "network-property-prediction"


class NetworkPropertyPredictionPipeline(Pipeline):
    """Predicts the properties of networks with the encoder's published probe heads.

    Loaded by ``pipeline("network-property-prediction", model=MODEL_DIR_OR_REPO)``: the encoder through
    ``AutoModel``, the ``NeuronTokenProcessor`` through ``AutoFeatureExtractor``, and the probe heads from the
    folder's ``probes/``.

    Args:
        zoo: Which zoo's probes to use when the folder has several (default: the last evaluated).
        probes: Target → ``HyperRepProbeModel``, instead of reading them from the model's folder.
        args: Passed on to ``Pipeline``.
        kwargs: Passed on to ``Pipeline`` (``batch_size`` sets the networks per forward pass, default 256).
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(
        self, *args: Any, zoo: str | None = None, probes: Mapping[str, HyperRepProbeModel] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        model_type = getattr(self.model.config, "model_type", None)
        if model_type != "hyperrep":
            raise ValueError(
                f"{TASK} needs a hyperrep_hf encoder (model_type 'hyperrep'); "
                f"{getattr(self.model, 'name_or_path', 'this model')} is a {model_type!r} model."
            )
        if probes is None:
            source = getattr(self.model, "name_or_path", "") or getattr(self.model.config, "_name_or_path", "")
            if not source:
                raise ProbesNotFoundError(
                    "The encoder was not loaded from a folder, so its probe heads cannot be found: pass probes=... "
                    "or load the pipeline from a model folder evaluated with `hyperrep evaluate`."
                )
            # From a Hub repo: the probes of the very commit the encoder came from.
            commit = None if os.path.isdir(source) else getattr(self.model.config, "_commit_hash", None)
            self.zoo, probes = load_probe_heads(source, zoo, **({"revision": commit} if commit else {}))
        else:
            self.zoo = zoo
        self.probes = {target: head.to(self.device).eval() for target, head in probes.items()}
        self._check_probe_sizes()
        # z averaged over the config's symmetric copies of each network, exactly as the probes were fitted on.
        self.transforms = symmetry_transforms(self.model.config, self.feature_extractor.architecture)

    def _check_probe_sizes(self) -> None:
        latent_dim = int(self.model.config.latent_dim)
        for target, head in self.probes.items():
            if head.config.input_dim != latent_dim:
                raise ValueError(
                    f"Probe {target!r} reads {head.config.input_dim}-dimensional embeddings, the encoder gives "
                    f"{latent_dim}: the probes belong to another encoder; re-run `hyperrep evaluate`."
                )

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(f"Unexpected arguments for {TASK}: {sorted(kwargs)}.")
        return {}, {}, {}

    def __call__(self, networks: Any, batch_size: int | None = None, **kwargs: Any) -> dict | list[dict]:
        """Predicts the properties of one network (→ dict) or a list / 2-D batch of them (→ list of dicts).

        Args:
            networks: An ``nn.Module``, a state_dict, a ``.safetensors`` path or a flat weight vector (1-D), or a
                list of them, or a (batch, num_parameters) tensor/array.
            batch_size: Networks per forward pass (default: the pipeline's, else 256).
            kwargs: None accepted.

        Returns:
            For each network a dict target → ``{"value": …, "validation_<metric>": …}`` (classification adds
            ``"probabilities"``: label → probability).

        Raises:
            ValueError: A network whose architecture does not match the encoder's (naming the parameter/shape).
        """
        self._sanitize_parameters(**kwargs)
        single = not _is_batch(networks)
        batch = [networks] if single else networks
        batch_size = batch_size or self._batch_size or 256
        outputs: list[dict] = []
        for start in range(0, len(batch), batch_size):
            model_inputs = self.preprocess(batch[start : start + batch_size])
            outputs += self.postprocess(self.forward(model_inputs))
        return outputs[0] if single else outputs

    def preprocess(self, networks: Any) -> dict[str, torch.Tensor]:
        """Networks → their raw flat weight vectors (``{"vectors": (batch, num_parameters)}``), checked."""
        try:
            return {"vectors": self.feature_extractor.networks_to_vectors(networks)}
        except ValueError as error:
            architecture = self.feature_extractor.architecture.get("name", "its")
            raise ValueError(
                f"This encoder reads {architecture} networks ({self.feature_extractor.num_parameters} parameters) "
                f"and cannot predict for this input: {error}"
            ) from error

    def embed(self, networks: Any) -> torch.Tensor:
        """The hyper-representations the probes read: (batch, latent_dim) for a network or a list of them."""
        networks = networks if _is_batch(networks) else [networks]
        return self._embed(self.preprocess(networks)["vectors"])

    def _embed(self, vectors: torch.Tensor) -> torch.Tensor:
        # The one place where the pipeline turns raw flat vectors into z (library and remote code alike).
        return embed_vectors(self.model, self.feature_extractor, vectors, self.transforms)

    def _forward(self, model_inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        embeddings = self._embed(model_inputs["vectors"])
        # Plain dicts: the base class rebuilds ModelOutputs as untyped ones when it moves them to the CPU.
        return {target: dict(head(embeddings)) for target, head in self.probes.items()}

    def postprocess(self, model_outputs: Mapping[str, Any]) -> list[dict]:
        """Per network, per target: the value, the probe's validation score and (classification) probabilities."""
        columns = {}
        for target, output in model_outputs.items():
            config = self.probes[target].config
            score = {f"validation_{config.metric}": config.validation_score}
            if config.task == "regression":
                columns[target] = [{"value": float(v)} | score for v in output["predictions"].float().cpu().tolist()]
                continue
            probabilities = torch.softmax(output["logits"].float(), dim=-1).cpu().numpy()
            columns[target] = [
                {"value": label, "probabilities": _probabilities(config.labels, row)} | score
                for label, row in zip(output["predicted_labels"], probabilities, strict=True)
            ]
        num_networks = len(next(iter(columns.values()))) if columns else 0
        return [{target: values[index] for target, values in columns.items()} for index in range(num_networks)]


def _probabilities(labels: Sequence, row: np.ndarray) -> dict[str, float]:
    return {str(label): float(probability) for label, probability in zip(labels, row, strict=True)}


def _is_batch(networks: Any) -> bool:
    """A list/tuple of networks, or a 2-D tensor/array of flat vectors (a 1-D vector is one network)."""
    if isinstance(networks, torch.Tensor | np.ndarray):
        return networks.ndim == 2
    if isinstance(networks, list | tuple):
        # A list of numbers is one flat vector, not a batch.
        return not (len(networks) > 0 and isinstance(networks[0], int | float))
    return False


def register_pipeline() -> None:
    """Registers the ``"network-property-prediction"`` task with transformers' pipeline registry."""
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=NetworkPropertyPredictionPipeline, pt_model=AutoModel)


def make_prediction_pipeline(
    model_dir_or_repo: str | os.PathLike, zoo: str | None = None, device: int | str | None = None
) -> NetworkPropertyPredictionPipeline:
    """``pipeline("network-property-prediction", model=...)``, checking first that the folder has probes.

    Raises:
        ProbesNotFoundError: The folder has no probes (telling to run ``hyperrep evaluate`` first).
    """
    from transformers import pipeline

    read_probe_index(model_dir_or_repo)  # fails early, before the encoder is loaded, when there are no probes
    return pipeline(TASK, model=os.fspath(model_dir_or_repo), zoo=zoo, device=device)


def predict_networks(
    model_dir: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    zoo: str | None = None,
    batch_size: int = 256,
) -> list[dict]:
    """Predictions for network files (``hyperrep predict MODEL FILE…``).

    Args:
        model_dir: Model folder or Hub repo with probe heads.
        files: ``.safetensors`` state_dicts of networks of the encoder's architecture.
        zoo: Which zoo's probes (default: the last evaluated).
        batch_size: Networks per forward pass.

    Returns:
        One ``{"network": file, "predictions": {target: {...}}}`` per file, in order.

    Raises:
        ProbesNotFoundError: No probes in the model folder.
        FileNotFoundError: A file that does not exist.
        ValueError: A network whose architecture does not match the encoder's.
    """
    missing = [os.fspath(path) for path in files if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"No such network file: {', '.join(missing)}.")
    predictor = make_prediction_pipeline(model_dir, zoo)
    predictions = predictor([os.fspath(path) for path in files], batch_size=batch_size)
    return [
        {"network": os.fspath(path), "predictions": prediction}
        for path, prediction in zip(files, predictions, strict=True)
    ]
