"""What a user does with a published encoder, in a fresh Python: tokenise networks, embed, run the probes, predict.

    python -I tests/user_story.py SOURCE NETWORKS.safetensors OUT_DIR --remote-code|--library

SOURCE is a model folder or a Hub repo id (``HF_ENDPOINT`` picks the Hub). ``--remote-code``: hyperrep_hf cannot be
imported (a meta-path hook refuses it, as on a machine without the package) and everything loads with
``trust_remote_code=True`` from the repo's code; ``--library``: ``import hyperrep_hf`` and no remote code. Writes
``OUT_DIR/tensors.safetensors`` (z, z̄, every probe head's output) and ``OUT_DIR/outputs.json`` (pipeline
predictions, the classes that were used).
"""

import importlib.abc
import json
import sys
from pathlib import Path

REMOTE = sys.argv[4] == "--remote-code"
if REMOTE:

    class BlockHyperRep(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hyperrep_hf":
                raise ModuleNotFoundError(f"No module named {name!r} (hyperrep_hf is not installed here)")

    sys.meta_path.insert(0, BlockHyperRep())
else:
    import hyperrep_hf  # noqa: F401 - registers the classes and the pipeline task

import torch  # noqa: E402 - after the import hook, as a user's script would be
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoFeatureExtractor, AutoModel, pipeline  # noqa: E402
from transformers.utils import cached_file  # noqa: E402

torch.set_num_threads(1)
source, networks_path, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
options = {"trust_remote_code": True} if REMOTE else {}
vectors = load_file(networks_path)["vectors"]  # (batch, num_parameters) raw flat weight vectors

processor = AutoFeatureExtractor.from_pretrained(source, **options)
encoder = AutoModel.from_pretrained(source, **options)
with torch.no_grad():
    z = encoder(**processor(list(vectors), return_tensors="pt")).embeddings
predictor = pipeline("network-property-prediction", model=source, **options)
z_bar = predictor.embed(vectors)
predictions = predictor(vectors)

index = json.loads(Path(cached_file(source, "probes/index.json")).read_text())
head_outputs, head_classes = {}, set()
for entry in index["probes"]:
    head = AutoModel.from_pretrained(source, subfolder=entry["path"], **options)
    head_classes.add(f"{type(head).__module__}.{type(head).__name__}")
    with torch.no_grad():
        output = head(z_bar)
    head_outputs[f"probe/{entry['zoo']}/{entry['target']}"] = (
        output.predictions if entry["task"] == "regression" else output.logits
    ).contiguous()

out_dir.mkdir(parents=True, exist_ok=True)
save_file({"z": z.contiguous(), "z_bar": z_bar.contiguous(), **head_outputs}, out_dir / "tensors.safetensors")
classes = {
    "processor": f"{type(processor).__module__}.{type(processor).__name__}",
    "encoder": f"{type(encoder).__module__}.{type(encoder).__name__}",
    "pipeline": f"{type(predictor).__module__}.{type(predictor).__name__}",
    "probe_heads": sorted(head_classes),
}
hyperrep_loaded = any(name.split(".")[0] == "hyperrep_hf" for name in sys.modules)
document = {"predictions": predictions, "classes": classes, "hyperrep_hf_imported": hyperrep_loaded}
(out_dir / "outputs.json").write_text(json.dumps(document, indent=2))
print("user story OK", "remote code" if REMOTE else "library")
