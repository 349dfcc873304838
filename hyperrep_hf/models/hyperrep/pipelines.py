"""The ``"network-property-prediction"`` pipeline: a network's weights → its predicted properties.

```
 network(s) ──NeuronTokenProcessor──► tokens ──HyperRepModel──► z̄ [⊕ s(W)] ──probe heads (probes/<zoo>/…)──► properties
 (nn.Module, state_dict, .safetensors path, flat vector; or a list of them)
```

The probes read the representation :func:`embeddings.embed_vectors` builds: z̄, followed by s(W) of the same views
when the encoder's config has ``append_weight_statistics`` (the probe heads record which; a mismatch is refused).

``import hyperrep_hf`` registers the task, so after it::

    predict = pipeline("network-property-prediction", model="path/to/model_folder")
    predict(network)
    # {"test_accuracy": {"value": 0.91, "validation_r2": 0.93},
    #  "activation": {"value": "tanh", "probabilities": {"relu": 0.1, "tanh": 0.9}, "validation_accuracy": 0.9}, …}

The model folder must hold probe heads (``hyperrep evaluate`` writes them); :func:`predict_networks` is the
library side of ``hyperrep predict MODEL FILE…``.

Predictions are checked against the zoo the probes were fitted on (``probes/<zoo>/statistics.json``, see
:mod:`weight_statistics`): a network whose weight norms lie far outside the zoo's gets a ``"warning"``
in every target's dict; a regression value outside the range the zoo showed is clipped to it (``"clipped": true,
"unclipped_value": …``); a value that is not finite is ``None``. The output never holds NaN or inf.

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

from .embeddings import (
    Z_LAYOUT,
    embed_vectors,
    networks_per_pass,
    representation_dim,
    representation_layout,
    symmetry_transforms,
)
from .modeling_hyperrep_probe import (
    HyperRepProbeModel,
    ProbeIndexError,
    ProbeMismatchError,
    ProbesNotFoundError,
    load_probe_heads,
    load_probe_statistics,
    read_probe_index,
)
from .weight_statistics import NOT_FINITE, clip_to_range, distribution_warnings

TASK = "network-property-prediction"
ACTIVATION_MODULES = {
    torch.nn.Tanh: "tanh",
    torch.nn.ReLU: "relu",
    torch.nn.Sigmoid: "sigmoid",
    torch.nn.GELU: "gelu",
    torch.nn.LeakyReLU: "leaky_relu",
}
"""Activation modules → the zoos' activation names (``network_activation`` reads a network's from its modules)."""


class NetworkPropertyPredictionPipeline(Pipeline):
    """Predicts the properties of networks with the encoder's published probe heads.

    Loaded by ``pipeline("network-property-prediction", model=MODEL_DIR_OR_REPO)``: the encoder through
    ``AutoModel``, the ``NeuronTokenProcessor`` through ``AutoFeatureExtractor``, and the probe heads from the
    folder's ``probes/``.

    Args:
        zoo: Which zoo's probes to use when the folder has several (default: the last evaluated).
        probes: Target → ``HyperRepProbeModel``, instead of reading them from the model's folder.
        statistics: The zoo's ``statistics.json`` document to check inputs and clip predictions with (read from
            the model's folder with its probes; None with ``probes=`` unless given).
        max_rows_per_pass: Encoder rows per forward pass: the symmetric copies (or canonical views) of many networks
            go through the encoder together, this many rows at a time (memory; default 2048).
        args: Passed on to ``Pipeline``.
        kwargs: Passed on to ``Pipeline`` (``device``; ``batch_size`` sets the networks per call, default: as many
            as fill ``max_rows_per_pass`` rows with their copies).
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(
        self,
        *args: Any,
        zoo: str | None = None,
        probes: Mapping[str, HyperRepProbeModel] | None = None,
        statistics: Mapping[str, Any] | None = None,
        max_rows_per_pass: int = 2048,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        model_type = getattr(self.model.config, "model_type", None)
        if model_type != "hyperrep":
            raise ValueError(
                f"{TASK} needs a hyperrep_hf encoder (model_type 'hyperrep'); "
                f"{getattr(self.model, 'name_or_path', 'this model')} is a {model_type!r} model."
            )
        self.statistics = statistics
        if probes is None:
            source = getattr(self.model, "name_or_path", "") or getattr(self.model.config, "_name_or_path", "")
            if not source:
                raise ProbesNotFoundError(
                    "The encoder was not loaded from a folder, so its probe heads cannot be found: pass probes=... "
                    "or load the pipeline from a model folder evaluated with `hyperrep evaluate`."
                )
            # From a Hub repo: the probes (and their statistics) of the very commit the encoder came from.
            commit = None if os.path.isdir(source) else getattr(self.model.config, "_commit_hash", None)
            hub_kwargs = {"revision": commit} if commit else {}
            self.zoo, probes = load_probe_heads(source, zoo, **hub_kwargs)
            if statistics is None:
                self.statistics = load_probe_statistics(source, self.zoo, **hub_kwargs)
        else:
            self.zoo = zoo
        self.probes = {target: head.to(self.device).eval() for target, head in probes.items()}
        self._check_probe_sizes()
        # z averaged over the config's symmetric copies of each network, exactly as the probes were fitted on.
        self.transforms = symmetry_transforms(self.model.config, self.feature_extractor.architecture)
        networks_per_pass(max_rows_per_pass, self.transforms, self.feature_extractor)  # checks it
        self.max_rows_per_pass = max_rows_per_pass

    def _check_probe_sizes(self) -> None:
        """Refuses probe heads fitted on another representation layout or size than the encoder's config gives."""
        layout = representation_layout(self.model.config)
        size = representation_dim(self.model.config, self.feature_extractor.architecture)
        for target, head in self.probes.items():
            fitted = getattr(head.config, "representation", Z_LAYOUT)
            if fitted != layout:
                raise ProbeMismatchError(
                    f"Probe {target!r} (zoo {self.zoo}) was fitted on the representation {fitted!r}, but the "
                    f"encoder's config gives {layout!r} ({_layout_settings(layout)}): the features do not match. "
                    "Re-fit the probes for this setting with `hyperrep evaluate MODEL --zoo ZOO --out DIR "
                    f"--overwrite`, or set {_layout_settings(fitted)} in the model's config.json."
                )
            if head.config.input_dim != size:
                raise ProbeMismatchError(
                    f"Probe {target!r} reads {head.config.input_dim}-dimensional embeddings, the encoder gives "
                    f"{size}: the probes belong to another encoder; re-run `hyperrep evaluate`."
                )

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(f"Unexpected arguments for {TASK}: {sorted(kwargs)}.")
        return {}, {}, {}

    def __call__(
        self,
        networks: Any,
        batch_size: int | None = None,
        activation: str | Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> dict | list[dict]:
        """Predicts the properties of one network (→ dict) or a list / 2-D batch of them (→ list of dicts).

        Args:
            networks: An ``nn.Module``, a state_dict, a ``.safetensors`` path or a flat weight vector (1-D), or a
                list of them, or a (batch, num_parameters) tensor/array.
            batch_size: Networks per call of the encoder's batched forward passes (default: the pipeline's, else as
                many as fill ``max_rows_per_pass`` encoder rows with their symmetric copies / canonical views).
            activation: The networks' activation (one name, or one per network), for inputs that cannot tell it;
                an ``nn.Module`` tells it by its activation module (``nn.Tanh``, ``nn.GELU``…). A network whose
                activation the encoder was not trained on gets a ``"warning"`` naming it, with the probes'
                validation scores on networks of that activation (or saying there were none).
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
        activations = self._activations(batch, activation)
        batch_size = batch_size or self._batch_size or self.networks_per_pass
        outputs: list[dict] = []
        for start in range(0, len(batch), batch_size):
            model_inputs = self.preprocess(batch[start : start + batch_size])
            outputs += self.postprocess(self.forward(model_inputs))
        for result, name in zip(outputs, activations, strict=True):
            text = self.activation_warning(name)
            for prediction in result.values() if text else ():
                prediction["warning"] = "; ".join(filter(None, [text, prediction.get("warning")]))
        return outputs[0] if single else outputs

    def _activations(self, batch: Sequence[Any], activation: str | Sequence[str | None] | None) -> list[str | None]:
        """Each network's activation: given, or read from an ``nn.Module``'s activation modules; None if unknown."""
        count = len(batch) if isinstance(batch, list | tuple) else int(batch.shape[0])
        if activation is None or isinstance(activation, str):
            if isinstance(batch, list | tuple):
                return [activation or network_activation(network) for network in batch]
            return [activation] * count
        if len(activation) != count:
            raise ValueError(f"activation= has {len(activation)} names for {count} networks: give one, or one each.")
        return list(activation)

    def trained_activations(self) -> list[str] | None:
        """The activations of the networks the encoder was trained on, as far as the model folder tells.

        The config's ``activation`` (a zoo of one activation), else those the probes were validated on (the zoo
        they were fitted on mixed activations); None when neither says.
        """
        configured = getattr(self.model.config, "activation", None)
        if configured:
            return [configured] if isinstance(configured, str) else sorted(map(str, configured))
        for head in self.probes.values():
            scores = getattr(head.config, "validation_score_by_activation", None)
            if scores:
                return sorted(scores)
        return None

    def activation_warning(self, activation: str | None) -> str | None:
        """The warning for a network of ``activation`` when the encoder was not trained on it; else None."""
        known = self.trained_activations()
        if activation is None or known is None or activation in known:
            return None
        scores = []
        for target, head in self.probes.items():
            by_activation = getattr(head.config, "validation_score_by_activation", None) or {}
            if activation in by_activation:
                score = by_activation[activation]
                scores.append(f"{target} {head.config.metric} {'n/a' if score is None else format(score, '.3f')}")
        text = (
            f"activation {activation!r}: the encoder was not trained on {activation} networks (it was on "
            f"{', '.join(known)}), so these predictions may be far off"
        )
        if scores:
            return text + f"; the probes' validation scores on {activation} networks: " + ", ".join(scores)
        zoo = f" (zoo {self.zoo} had none)" if self.zoo else ""
        return text + f"; the probes have no validation score on {activation} networks{zoo}"

    def preprocess(self, networks: Any) -> dict[str, torch.Tensor]:
        """Networks → their raw flat weight vectors (``{"vectors": (batch, num_parameters)}``), checked."""
        for network in networks if isinstance(networks, list | tuple) else [networks]:
            if isinstance(network, str | os.PathLike):
                check_safetensors_file(network)
        try:
            return {"vectors": self.feature_extractor.networks_to_vectors(networks)}
        except ValueError as error:
            architecture = self.feature_extractor.architecture.get("name", "its")
            raise ValueError(
                f"This encoder reads {architecture} networks ({self.feature_extractor.num_parameters} parameters) "
                f"and cannot predict for this input: {error}"
            ) from error

    def embed(self, networks: Any) -> torch.Tensor:
        """The hyper-representations the probes read, for a network or a list of them.

        (batch, latent_dim): z̄; with the config's ``append_weight_statistics``, z̄ followed by s(W),
        (batch, latent_dim + 7 · num_layers).
        """
        networks = networks if _is_batch(networks) else [networks]
        return self._embed(self.preprocess(networks)["vectors"])

    @property
    def networks_per_pass(self) -> int:
        """Networks whose copies / canonical views fill ``max_rows_per_pass`` encoder rows."""
        return networks_per_pass(self.max_rows_per_pass, self.transforms, self.feature_extractor)

    def _embed(self, vectors: torch.Tensor) -> torch.Tensor:
        # The one place where the pipeline turns raw flat vectors into the representation (library and remote code).
        return embed_vectors(self.model, self.feature_extractor, vectors, self.transforms, self.max_rows_per_pass)

    def _forward(self, model_inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        embeddings = self._embed(model_inputs["vectors"])
        # Plain dicts: the base class rebuilds ModelOutputs as untyped ones when it moves them to the CPU.
        outputs = {target: dict(head(embeddings)) for target, head in self.probes.items()}
        return {"probes": outputs, "vectors": model_inputs["vectors"]}

    def postprocess(self, model_outputs: Mapping[str, Any]) -> list[dict]:
        """Per network, per target: the value, the probe's validation score and (classification) probabilities.

        Values are checked against the zoo's statistics (see the module docstring): never NaN or inf.
        """
        columns = {}
        for target, output in model_outputs["probes"].items():
            config = self.probes[target].config
            score = {f"validation_{config.metric}": config.validation_score}
            if config.task == "regression":
                columns[target] = [
                    clip_to_range(float(v), target, self.statistics) | score
                    for v in output["predictions"].double().cpu().tolist()
                ]
                continue
            probabilities = torch.softmax(output["logits"].double(), dim=-1).cpu().numpy()
            columns[target] = [
                {"value": label, "probabilities": _probabilities(config.labels, row)} | score
                if np.isfinite(row).all()
                else {"value": None, "probabilities": None, "warning": NOT_FINITE} | score
                for label, row in zip(output["predicted_labels"], probabilities, strict=True)
            ]
        num_networks = len(next(iter(columns.values()))) if columns else 0
        warnings = [None] * num_networks
        if self.statistics is not None:
            vectors = model_outputs["vectors"].double().cpu().numpy()
            parameters = self.feature_extractor.architecture["parameters"]
            warnings = distribution_warnings(vectors, parameters, self.statistics)
        results = []
        for index in range(num_networks):
            result = {target: values[index] for target, values in columns.items()}
            if warnings[index]:
                for prediction in result.values():
                    prediction["warning"] = "; ".join(filter(None, [warnings[index], prediction.get("warning")]))
            results.append(result)
        return results


FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
"""safetensors dtype names of floating-point tensors."""


def check_safetensors_file(path: str | os.PathLike, what: str = "network file") -> str:
    """Checks that ``path`` is a complete ``.safetensors`` file (header and every tensor's bytes), never unpickling.

    Returns:
        The path, as a string.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A folder, an empty / truncated file, another format (a pickle or ``torch.save`` file
            renamed ``.safetensors``), or tensors that are not floating point — with the reason and what to do.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such {what}: {path}.")
    if not os.path.isfile(path):
        raise ValueError(f"{what.capitalize()} {path} is a folder; pass a .safetensors file.")
    try:
        with safe_open(path, framework="pt") as handle:
            dtypes = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{what.capitalize()} {path} is not a readable .safetensors file ({error}): it is truncated or damaged, "
            "or it is another format (a pickle / torch.save checkpoint, which is never unpickled here). Save the "
            "state_dict with safetensors.torch.save_file(state_dict, path) and pass that file."
        ) from None
    not_float = {name: dtype for name, dtype in dtypes.items() if dtype not in FLOAT_DTYPES}
    if not_float:
        listing = ", ".join(f"{name} ({dtype})" for name, dtype in not_float.items())
        raise ValueError(
            f"{what.capitalize()} {path} holds tensors that are not floating point: {listing}. Weights of a network "
            "are float32/float16/bfloat16/float64; a quantised or integer state_dict must be converted first."
        )
    return path


def network_activation(network: Any) -> str | None:
    """The activation of an ``nn.Module`` (its one kind of activation module, see :data:`ACTIVATION_MODULES`).

    None for anything else (state_dicts, files, vectors carry no activation) and for modules with none or several.
    """
    if not isinstance(network, torch.nn.Module):
        return None
    found = {name for kind, name in ACTIVATION_MODULES.items() for module in network.modules() if type(module) is kind}
    return found.pop() if len(found) == 1 else None


def _layout_settings(layout: str) -> str:
    """The config fields that give a representation layout, as ``hyperrep evaluate`` writes them."""
    if layout == Z_LAYOUT:
        return "append_weight_statistics=false"
    return f"append_weight_statistics=true, weight_statistics={layout.removeprefix('z+')!r}"


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
    model_dir_or_repo: str | os.PathLike,
    zoo: str | None = None,
    device: int | str | None = None,
    max_rows_per_pass: int = 2048,
) -> NetworkPropertyPredictionPipeline:
    """``pipeline("network-property-prediction", model=...)``, checking first that the folder has probes.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"``… (None: the CPU); ``max_rows_per_pass``: encoder rows per forward
    pass (a network's symmetric copies / canonical views count).

    Raises:
        ProbesNotFoundError: The folder has no probes (telling to run ``hyperrep evaluate`` first).
        ProbeIndexError: A damaged ``probes/index.json`` or probe head.
        ProbeMismatchError: Probes fitted on another representation than the config's (``append_weight_statistics``).
        ValueError: An encoder or processor that cannot be loaded (naming the folder).
    """
    from safetensors import SafetensorError
    from transformers import pipeline

    read_probe_index(model_dir_or_repo)  # fails early, before the encoder is loaded, when there are no probes
    try:
        return pipeline(
            TASK, model=os.fspath(model_dir_or_repo), zoo=zoo, device=device, max_rows_per_pass=max_rows_per_pass
        )
    except (ProbesNotFoundError, ProbeIndexError, ProbeMismatchError):
        raise
    except (OSError, ValueError, SafetensorError) as error:
        raise ValueError(
            f"Cannot load the encoder from {model_dir_or_repo} ({type(error).__name__}: {error}). Its config.json, "
            "model.safetensors or preprocessor_config.json is damaged or missing: re-download the model, or take "
            "it again from the training run."
        ) from None


def predict_networks(
    model_dir: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    zoo: str | None = None,
    batch_size: int | None = None,
    device: int | str | None = None,
    max_rows_per_pass: int = 2048,
    activation: str | None = None,
) -> list[dict]:
    """Predictions for network files (``hyperrep predict MODEL FILE…``).

    Args:
        model_dir: Model folder or Hub repo with probe heads.
        files: ``.safetensors`` state_dicts of networks of the encoder's architecture.
        zoo: Which zoo's probes (default: the last evaluated).
        batch_size: Networks per call (default: as many as fill ``max_rows_per_pass`` with their copies).
        device: Where the encoder and probes run (``"cpu"``, ``"cuda"``, ``"cuda:1"``; None: the CPU).
        max_rows_per_pass: Encoder rows per forward pass (symmetric copies / canonical views included).
        activation: The networks' activation, when known: a warning if the encoder was not trained on it.

    Returns:
        One ``{"network": file, "predictions": {target: {...}}, "warning": str | None}`` per file, in order; the
        warning says when the network is far outside the zoo's weight distribution or a value was clipped.

    Raises:
        ProbesNotFoundError: No probes in the model folder.
        FileNotFoundError: A file that does not exist.
        ValueError: A file that is not a complete ``.safetensors`` file, or a network whose architecture does not
            match the encoder's.
    """
    check_network_files(files)
    predictor = make_prediction_pipeline(model_dir, zoo, device, max_rows_per_pass)
    return predict_files(predictor, files, batch_size, activation)


def check_network_files(files: Sequence[str | os.PathLike]) -> None:
    """Every missing file named at once, then each checked by :func:`check_safetensors_file`."""
    missing = [os.fspath(path) for path in files if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(f"No such network file: {', '.join(missing)}.")
    for path in files:
        check_safetensors_file(path)


def predict_files(
    predictor: NetworkPropertyPredictionPipeline,
    files: Sequence[str | os.PathLike],
    batch_size: int | None = None,
    activation: str | None = None,
) -> list[dict]:
    """:func:`predict_networks` with a loaded pipeline (the files checked already): one dict per file, in order.

    ``activation``: the networks' activation (files do not tell it), checked against the encoder's.
    """
    predictions = predictor([os.fspath(path) for path in files], batch_size=batch_size, activation=activation)
    return [
        {"network": os.fspath(path), "predictions": prediction, "warning": _network_warning(prediction)}
        for path, prediction in zip(files, predictions, strict=True)
    ]


def _network_warning(prediction: Mapping[str, dict]) -> str | None:
    """One line for a network: its distribution warning, non-finite and clipped targets; None if none."""
    distribution, not_finite, clipped = None, [], []
    for target, value in prediction.items():
        text = value.get("warning") or ""
        if text.endswith(NOT_FINITE):
            not_finite.append(target)
            text = text[: -len(NOT_FINITE)].rstrip("; ")
        distribution = distribution or text or None  # the same text in every target
        if value.get("clipped"):
            clipped.append(f"{target} {value['unclipped_value']:.4g} → {value['value']:.4g}")
    parts = [distribution] if distribution else []
    if not_finite:
        parts.append(f"not finite, given as null: {', '.join(not_finite)}")
    if clipped:
        parts.append(f"clipped to the zoo's observed range: {', '.join(clipped)}")
    return "; ".join(parts) or None
