"""Tokenising + augmenting 500 networks of the 2464-parameter CNN: batched index maps vs a per-network loop.

    python bench/bench_tokens.py [--threads 1 2] [--num-networks 500] [--repeats 5]

Writes bench/results/tokens.json. Cases, all on the same 500 networks in the same run:

- ``two_views_from_vectors``: the training path. ``TwoViewCollator`` on a (500, 2464) batch: permutation +
  erasing for two views, then tokens of the clean vectors and both views (three tokenisations).
- ``tokens_from_state_dicts``: ``processor(list_of_state_dicts)``, the inference path (checks included).
- ``naive_loop``: the same work one network at a time in Python — per-layer permutation of the state dict
  tensors, erasing on the flat vector, tokens built neuron by neuron — as a reference implementation would.

Throughput is networks per second (one network = clean tokens + two augmented views for the training cases).
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from hyperrep_hf.models.hyperrep.augmentations import TwoViewCollator, make_augmentations
from hyperrep_hf.models.hyperrep.processing_hyperrep import NeuronTokenProcessor
from hyperrep_hf.zoo.networks import MNIST_CNN, make_module


def naive_tokens(state_dict: dict, spec, token_dim: int) -> torch.Tensor:
    """Per-layer tokens of one network, neuron by neuron."""
    tokens = []
    for layer in spec.parameter_layers:
        weight = state_dict[layer.weight_name]
        for neuron in range(layer.num_neurons):
            row = weight[neuron].reshape(-1)
            if layer.bias_name:
                row = torch.cat([row, state_dict[layer.bias_name][neuron : neuron + 1]])
            tokens.append(torch.nn.functional.pad(row, (0, token_dim - row.numel())))
    return torch.stack(tokens)


def naive_view(state_dict: dict, spec, generator: torch.Generator) -> dict:
    """One augmented view of one network: permute each hidden layer, then maybe erase a block."""
    view = {name: tensor.clone() for name, tensor in state_dict.items()}
    layers = spec.parameter_layers
    for layer, next_layer in itertools.pairwise(layers):
        perm = torch.randperm(layer.num_neurons, generator=generator)
        view[layer.weight_name] = view[layer.weight_name][perm]
        if layer.bias_name:
            view[layer.bias_name] = view[layer.bias_name][perm]
        weight = view[next_layer.weight_name]
        if next_layer.kind == "conv":
            view[next_layer.weight_name] = weight[:, perm]
        else:
            block = next_layer.flatten_block
            columns = (perm[:, None] * block + torch.arange(block)).reshape(-1)
            view[next_layer.weight_name] = weight[:, columns]
    flat = torch.cat([tensor.reshape(-1) for tensor in view.values()])
    if float(torch.rand(1, generator=generator)) < 0.5:
        length = round(float(torch.empty(1).uniform_(0.03, 0.3, generator=generator)) * flat.numel())
        start = int(torch.randint(flat.numel() - length + 1, (1,), generator=generator))
        flat[start : start + length] = 0
    result, offset = {}, 0
    for name, tensor in view.items():
        result[name] = flat[offset : offset + tensor.numel()].view(tensor.shape)
        offset += tensor.numel()
    return result


def naive_two_views(state_dicts: list, spec, token_dim: int, generator: torch.Generator) -> torch.Tensor:
    batch = []
    for state_dict in state_dicts:
        views = [naive_view(state_dict, spec, generator) for _ in range(2)]
        batch.append(torch.stack([naive_tokens(sd, spec, token_dim) for sd in (state_dict, *views)]))
    return torch.stack(batch)


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds over ``repeats`` calls, and the last result."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def measure(state_dicts: list, spec, repeats: int) -> dict:
    """Networks/s of the three cases on this thread setting."""
    count = len(state_dicts)
    processor = NeuronTokenProcessor(spec)
    vectors = processor.networks_to_vectors(state_dicts)
    started = time.perf_counter()
    augmentations = make_augmentations(spec, num_permutations=1000)  # permutation + erasing (p 0.5, 0.03–0.3)
    setup_seconds = time.perf_counter() - started
    collator = TwoViewCollator(augmentations, torch.Generator().manual_seed(0), processor=processor)

    cases = {}
    seconds, batch = timed(lambda: collator(vectors), repeats)
    cases["two_views_from_vectors"] = {"seconds": seconds, "networks_per_s": count / seconds}
    seconds, _ = timed(lambda: processor(state_dicts), repeats)
    cases["tokens_from_state_dicts"] = {"seconds": seconds, "networks_per_s": count / seconds}
    generator = torch.Generator().manual_seed(0)
    baseline_runs = max(1, repeats // 2)
    seconds, naive = timed(lambda: naive_two_views(state_dicts, spec, processor.token_dim, generator), baseline_runs)
    cases["naive_loop"] = {"seconds": seconds, "networks_per_s": count / seconds}
    # Same clean tokens both ways (the views differ: different random streams).
    assert torch.equal(naive[:, 0], batch["labels"]), "naive and batched clean tokens differ"
    speedup = cases["two_views_from_vectors"]["networks_per_s"] / cases["naive_loop"]["networks_per_s"]
    return {"permutation_setup_seconds": setup_seconds, "cases": cases, "speedup_vs_naive_loop": speedup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--num-networks", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/tokens.json")
    arguments = parser.parse_args()
    spec = MNIST_CNN
    torch.manual_seed(0)
    state_dicts = [make_module(spec).state_dict() for _ in range(arguments.num_networks)]
    processor = NeuronTokenProcessor(spec)
    results = {
        "benchmark": "tokenise + two augmented views (permutation + erasing), mnist_cnn, per_layer tokens",
        "num_networks": arguments.num_networks,
        "num_parameters": spec.num_parameters,
        "tokens": [processor.num_tokens, processor.token_dim],
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": os.getloadavg()[0],
        "by_threads": {},
    }
    for threads in dict.fromkeys(arguments.threads):
        torch.set_num_threads(threads)
        result = measure(state_dicts, spec, arguments.repeats)
        results["by_threads"][str(threads)] = result
        for name, case in result["cases"].items():
            rate, milliseconds = case["networks_per_s"], case["seconds"] * 1e3
            print(f"threads {threads}  {name:24s} {rate:8.0f} networks/s ({milliseconds:.0f} ms)")
        print(f"threads {threads}  speedup over the naive loop: {result['speedup_vs_naive_loop']:.1f}x")
    results["load_average_1min_after"] = os.getloadavg()[0]
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"→ {arguments.out}")


if __name__ == "__main__":
    main()
