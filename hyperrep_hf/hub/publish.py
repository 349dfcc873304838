"""Publishing model and zoo folders to a Hub (``hyperrep push``) and checking what is pulled from one.

```
 model folder ──(config, weights, processor, probes/, eval/, card, remote code)──► one commit ──► model repo
 zoo folder ──(<zoo>/*.parquet, <zoo>/zoo_info.json, plots, card merged with the repo's)──► one commit ──► dataset repo
```

A push is one ``HfApi.create_commit``: the Hub applies all of it or nothing, so a failed push (server error, revoked
token) publishes nothing. ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured as by every HF library. Pulling needs no
code here: ``AutoModel.from_pretrained(repo)``, ``AutoFeatureExtractor``, ``pipeline(..., model=repo)``,
``datasets.load_dataset`` with the repo and a zoo; :func:`check_model_source` turns "this is not a hyperrep model"
into a clear error.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..checks import hub_endpoint, hub_unreachable
from ..models.hyperrep.configuration_hyperrep import FORMAT_VERSION, HyperRepConfig

MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
TRAINING_FOLDERS = ("checkpoints", "training_state")
PUBLISHED_RECORD = ".hyperrep_hub.json"  # in a zoo folder after `hyperrep push`: where it was published
# The folder of the flat remote-code files (hyperrep_hf/models/hyperrep/).
MODEL_CODE_DIR = Path(__file__).resolve().parent.parent / "models" / "hyperrep"
REMOTE_CODE_ENTRY_POINTS = ("modeling_hyperrep.py", "pipelines.py", "modeling_hyperrep_probe.py")
PROBE_AUTO_MAP = {
    "AutoConfig": "modeling_hyperrep_probe.HyperRepProbeConfig",
    "AutoModel": "modeling_hyperrep_probe.HyperRepProbeModel",
}
PROCESSOR_AUTO_MAP = {"AutoFeatureExtractor": "processing_hyperrep.NeuronTokenProcessor"}
MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_hyperrep.HyperRepConfig",
    "AutoModel": "modeling_hyperrep.HyperRepModel",
    "AutoModelForPreTraining": "modeling_hyperrep.HyperRepForPreTraining",
}


class PushError(RuntimeError):
    """A push that cannot start (the folder is not publishable) or that the Hub refused (nothing was published)."""


class NotAHyperRepRepoError(ValueError):
    """A folder or repo that is not a hyperrep_hf model (another library, or a newer format)."""


class NotInCacheError(FileNotFoundError):
    """A repo asked for with ``HF_HUB_OFFLINE=1`` that is not in the local cache."""


# ----------------------------------------------------------------------------------------------------------------
# Remote code
# ----------------------------------------------------------------------------------------------------------------


def remote_code_files() -> dict[str, bytes]:
    """The flat files a model repo needs to load without hyperrep_hf: file name → content.

    The entry points (encoder, pipeline, probe heads) and every single-dot sibling they import, found the way
    transformers finds them when it loads remote code, so the set follows the code as it changes.
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    package = MODEL_CODE_DIR
    files: dict[str, bytes] = {}
    for entry in REMOTE_CODE_ENTRY_POINTS:
        for path in [package / entry, *map(Path, get_relative_import_files(str(package / entry)))]:
            files[path.name] = path.read_bytes()
    return files


def probe_code_files() -> dict[str, bytes]:
    """The flat files a probe head's folder needs to load with ``trust_remote_code``: its modeling file and imports."""
    from transformers.dynamic_module_utils import get_relative_import_files

    entry = MODEL_CODE_DIR / "modeling_hyperrep_probe.py"
    return {path.name: path.read_bytes() for path in [entry, *map(Path, get_relative_import_files(str(entry)))]}


def write_remote_code(model_dir: str | os.PathLike) -> list[Path]:
    """Writes :func:`remote_code_files` into a model folder (the pipeline and its helpers next to the encoder)."""
    written = []
    for name, content in remote_code_files().items():
        path = Path(model_dir) / name
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------------------------
# What a folder is
# ----------------------------------------------------------------------------------------------------------------


def folder_kind(folder: str | os.PathLike) -> str:
    """``"model"`` or ``"zoo"``.

    Raises:
        PushError: The folder does not exist, or is neither (naming what it holds and what was expected).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder.")
    if (folder / "config.json").is_file():
        return "model"
    if any(folder.glob("*/zoo_info.json")):
        return "zoo"
    if (folder / "checkpoints").is_dir():
        raise PushError(
            f"{folder} is a training run without its final model (no config.json at its root: the run did not "
            "finish). Resume it with the same `hyperrep train` command, or evaluate and push a checkpoint's "
            f"{folder}/checkpoints/<step>/pretrained_model."
        )
    held = sorted(path.name for path in folder.iterdir())[:12]
    raise PushError(
        f"{folder} is neither a model folder (config.json + model.safetensors + preprocessor_config.json, written by "
        "`hyperrep train`) nor a zoo folder (<zoo>/zoo_info.json + <zoo>/*.parquet, written by `hyperrep zoo build`); "
        f"it holds: {', '.join(held) or 'nothing'}."
    )


def check_model_folder(folder: Path) -> None:
    """A model folder ready to publish: a hyperrep encoder with processor, probe heads and card.

    Raises:
        PushError: Naming every missing piece and the command that makes it.
    """
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != HyperRepConfig.model_type:
        raise PushError(
            f"{folder}/config.json is a {config.get('model_type')!r} model, not a hyperrep_hf encoder (model_type "
            f"'hyperrep'): push it with its own library."
        )
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise PushError(
            f"{folder} lacks {', '.join(missing)}: not a complete encoder. A training run writes them at its end "
            "(`hyperrep train CONFIG`); an interrupted run's last checkpoint is checkpoints/<step>/pretrained_model."
        )
    lacking = []
    if not (folder / "probes" / "index.json").is_file():
        lacking.append("probe heads (probes/index.json)")
    if not (folder / "README.md").is_file():
        lacking.append("a model card (README.md)")
    if lacking:
        raise PushError(
            f"{folder} has no {' and no '.join(lacking)}. Run `hyperrep evaluate {folder} --zoo ZOO_DIR[:CONFIG] "
            "--out DIR` first: it fits the probe heads, writes eval/ and the model card."
        )


def check_model_source(model_dir_or_repo: str | os.PathLike, **hub_kwargs: Any) -> dict:
    """The config.json of a model folder or repo, checked to be a hyperrep_hf encoder this code can read.

    Raises:
        NotAHyperRepRepoError: Another library's model, or a newer model format (naming what was found).
        ValueError: A file instead of a folder, or a damaged config.json (naming it).
        FileNotFoundError: A local folder without config.json; no such folder, and no Hub repo of that name could be
            read (``NotInCacheError``: not in the cache with ``HF_HUB_OFFLINE=1``).
    """
    from transformers.utils import cached_file

    source = os.fspath(model_dir_or_repo)
    if os.path.isdir(source):
        path = os.path.join(source, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{source} is not a trained model folder: it has no config.json. Pass the folder `hyperrep train` "
                "wrote (its --output-dir, or one of its checkpoints/<step>/pretrained_model/)."
            )
    elif os.path.exists(source):
        raise ValueError(f"Model {source} is a file; pass a model folder (config.json, model.safetensors, …).")
    elif os.path.isabs(source) or source.startswith(".") or source.count("/") > 1:  # a path, never a repo id
        raise FileNotFoundError(
            f"No model folder {source} (and it is no Hub repo id: those are NAME or ORG/NAME). Pass the folder "
            "`hyperrep train` wrote, or a model repo id."
        )
    else:
        from huggingface_hub import constants

        unreachable = hub_unreachable()
        try:  # without network, only the cache is looked at: a mistyped folder is named at once, not after retries
            cache_only = {"local_files_only": True} if unreachable else {}
            path = cached_file(source, "config.json", **cache_only, **hub_kwargs)
        except OSError as error:
            if unreachable:
                raise FileNotFoundError(
                    f"No model folder {source} (in {os.getcwd()}), and the Hub at {hub_endpoint()} cannot be reached "
                    "to look for a model repo of that name (nor is one in the Hub cache). Pass the folder "
                    "`hyperrep train` wrote, or check the network (and HF_ENDPOINT)."
                ) from error
            if not constants.HF_HUB_OFFLINE:
                raise FileNotFoundError(
                    f"No model folder {source}, and it could not be read as a Hub model repo either "
                    f"({type(error).__name__}: {' '.join(str(error).split())}). Pass a model folder or a repo id."
                ) from error
            raise NotInCacheError(
                f"{source} is not a local folder and not in the Hub cache ({constants.HF_HUB_CACHE}), and "
                "HF_HUB_OFFLINE=1 forbids downloading it. Run once with network access (or unset HF_HUB_OFFLINE), "
                "or pass a local model folder."
            ) from error
    try:
        config = json.loads(Path(path).read_text())
        if not isinstance(config, dict):
            raise ValueError(f"expected a JSON object, found {type(config).__name__}")
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Cannot load the encoder from {source}: its config.json is damaged ({' '.join(str(error).split())}). "
            "Re-download the model, or take it again from the training run's checkpoints."
        ) from None
    model_type = config.get("model_type")
    if model_type != HyperRepConfig.model_type:
        library = config.get("library_name") or ("transformers" if "transformers_version" in config else "unknown")
        raise NotAHyperRepRepoError(
            f"{source} holds a model of type {model_type!r} (library: {library}, architectures: "
            f"{config.get('architectures')}), not a hyperrep_hf encoder (model_type 'hyperrep')."
        )
    version = config.get("hyperrep_format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise NotAHyperRepRepoError(
            f"{source} was written in hyperrep_hf model format version {version!r}; this hyperrep_hf reads up to "
            f"{FORMAT_VERSION}. Upgrade hyperrep_hf, or load it with trust_remote_code=True to use the repo's code."
        )
    return config


# ----------------------------------------------------------------------------------------------------------------
# Pushing
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PushResult:
    """What a push published."""

    repo_id: str
    repo_type: str
    revision: str
    commit_url: str
    commit_oid: str
    files: list[str]


def _is_excluded(relative: str, include_checkpoints: bool) -> bool:
    parts = relative.split("/")
    if any(part.startswith(".") or part == "__pycache__" for part in parts):
        return True
    return not include_checkpoints and any(part in TRAINING_FOLDERS for part in parts[:-1])


def _json_bytes(value: dict) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def model_operations(folder: Path, include_checkpoints: bool = False) -> dict[str, bytes | Path]:
    """Path in repo → content (bytes) or local file, for a model folder.

    The folder's files, minus checkpoints/ and training state (unless asked for), with the current remote code and
    the ``auto_map`` / ``custom_pipelines`` entries that make it load without hyperrep_hf.
    """
    files: dict[str, bytes | Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not _is_excluded(relative, include_checkpoints):
            files[relative] = path
    files.update(remote_code_files())
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {**MODEL_AUTO_MAP, **(config.get("auto_map") or {})}
    config["custom_pipelines"] = HyperRepConfig().to_dict()["custom_pipelines"]
    config.setdefault("hyperrep_format_version", FORMAT_VERSION)
    files["config.json"] = _json_bytes(config)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    processor["auto_map"] = {**(processor.get("auto_map") or {}), **PROCESSOR_AUTO_MAP}
    files["preprocessor_config.json"] = _json_bytes(processor)
    index = json.loads((folder / "probes" / "index.json").read_text())
    for entry in index["probes"]:
        probe_config = json.loads((folder / entry["path"] / "config.json").read_text())
        probe_config["auto_map"] = {**(probe_config.get("auto_map") or {}), **PROBE_AUTO_MAP}
        files[f"{entry['path']}/config.json"] = _json_bytes(probe_config)
        for name, content in probe_code_files().items():  # a head loads from its own subfolder
            files[f"{entry['path']}/{name}"] = content
    return files


def _zoo_operations(folder: Path) -> tuple[list[str], dict[str, bytes | Path]]:
    zoos = sorted(path.parent.name for path in folder.glob("*/zoo_info.json"))
    files: dict[str, bytes | Path] = {}
    for zoo in zoos:
        for path in sorted((folder / zoo).iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix in (".parquet", ".json", ".png"):
                files[f"{zoo}/{path.name}"] = path
    return zoos, files


def _remote_zoo_infos(api: Any, repo_id: str, revision: str, skip: set[str]) -> list[dict]:
    """The zoo_info.json (+ final accuracies, splits) of every zoo already in a dataset repo, except ``skip``."""
    from huggingface_hub import HfFileSystem, hf_hub_download

    from ..zoo.folder import SPLITS, final_test_accuracies

    repo_files = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    file_system = HfFileSystem(endpoint=api.endpoint, token=api.token)
    infos = []
    for info_file in sorted(name for name in repo_files if fnmatch.fnmatch(name, "*/zoo_info.json")):
        zoo = info_file.split("/")[0]
        if zoo in skip or "/" in info_file[len(zoo) + 1 :]:
            continue
        path = hf_hub_download(
            repo_id, info_file, repo_type="dataset", revision=revision, endpoint=api.endpoint, token=api.token
        )
        info = json.loads(Path(path).read_text())
        shards = sorted(name for name in repo_files if name.startswith(f"{zoo}/") and name.endswith(".parquet"))
        values: list[float] = []
        for shard in shards:  # two columns, read by range requests, not the weights
            with file_system.open(f"datasets/{repo_id}@{revision}/{shard}", "rb") as handle:
                values += final_test_accuracies([handle], info["epochs"])
        info["final_test_accuracy"] = values
        info["available_splits"] = [s for s in SPLITS if any(name.startswith(f"{zoo}/{s}-") for name in shards)]
        infos.append(info)
    return infos


def push(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    include_checkpoints: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    progress: bool = True,
) -> PushResult:
    """Publishes a model folder (as a model repo) or a zoo folder (as a dataset repo) in one commit.

    Args:
        folder: A model folder (after ``hyperrep evaluate``) or a zoo folder (``hyperrep zoo build``).
        repo_id: ``org/name`` on the Hub; created when missing.
        private: Create the repo private.
        revision: Branch to commit to (created from main when missing); default main.
        include_checkpoints: Also publish checkpoints/ and training state of a training run folder.
        token: Defaults to ``HF_TOKEN`` / the saved login.
        endpoint: Defaults to ``HF_ENDPOINT`` / huggingface.co.
        progress: Progress bars while hashing and uploading.

    Raises:
        PushError: The folder cannot be published (what is missing, which command makes it), or the Hub refused
            the push (nothing was published).
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    bars_were_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        return _push(folder, repo_id, private, revision, include_checkpoints, token, endpoint, progress)
    finally:
        if not progress and not bars_were_disabled:
            enable_progress_bars()


def _push(folder, repo_id, private, revision, include_checkpoints, token, endpoint, progress) -> PushResult:
    from httpx2 import TransportError
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from tqdm.auto import tqdm

    folder = Path(folder)
    kind = folder_kind(folder)
    repo_type = "model" if kind == "model" else "dataset"
    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    deletions: list[str] = []
    parent_commit = None
    try:
        if kind == "model":
            check_model_folder(folder)
            files = model_operations(folder, include_checkpoints)
            card = _model_card(folder, repo_id, api.endpoint)
            if card is not None:
                files["README.md"] = card.encode()
            message = f"Upload hyperrep_hf encoder {folder.resolve().name} with probe heads"
        else:
            zoos, files = _zoo_operations(folder)
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
        if kind == "zoo":
            from ..zoo.folder import local_zoo_infos
            from .cards import render_dataset_card

            # The card merges what is in the repo now: commit on top of exactly that state (else the Hub refuses).
            parent_commit = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
            existing = api.list_repo_files(repo_id, repo_type="dataset", revision=parent_commit)
            deletions = sorted({name.split("/")[0] + "/" for name in existing if name.split("/")[0] in zoos})
            infos = _remote_zoo_infos(api, repo_id, parent_commit, skip=set(zoos)) + local_zoo_infos(folder)
            files["README.md"] = render_dataset_card(sorted(infos, key=lambda info: info["name"])).encode()
            message = f"Upload model zoo(s) {', '.join(zoos)}"
        operations: list = [CommitOperationDelete(path_in_repo=name, is_folder=True) for name in deletions]
        for name, content in tqdm(files.items(), desc="hashing", unit="file", disable=not progress or len(files) < 20):
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=message,
            repo_type=repo_type,
            revision=branch,
            parent_commit=parent_commit,
            num_threads=4,
        )
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise PushError(
            f"The Hub at {api.endpoint} refused the push of {folder} to {repo_id} (HTTP {status}): "
            f"{str(error).splitlines()[0]}. Nothing was published: a push is one commit. "
            + ("Check HF_TOKEN (it may be revoked or lack write access). " if status in (401, 403) else "")
        ) from error
    except TransportError as error:  # no answer at all: DNS, connection refused, timeout
        raise PushError(
            f"Cannot reach the Hub at {api.endpoint} ({type(error).__name__}: {error}); nothing was published. "
            "Check the network, or set HF_ENDPOINT to the Hub you mean."
        ) from error
    except RuntimeError as error:  # huggingface_hub wraps failed LFS uploads in RuntimeError
        if isinstance(error, PushError):
            raise
        raise PushError(f"Upload of {folder} to {repo_id} failed: {error}. Nothing was published.") from error
    if kind == "zoo":  # so that a model evaluated on this folder names the published dataset in its card
        record = {"endpoint": api.endpoint, "repo_id": repo_id, "zoos": zoos, "commit": commit.oid}
        write_json_atomic(folder / PUBLISHED_RECORD, record)
    return PushResult(repo_id, repo_type, branch, commit.commit_url, commit.oid, sorted(files))


def _model_card(folder: Path, repo_id: str, endpoint: str) -> str | None:
    """The model card re-rendered for the repo: its own id in the snippets, published zoos as Hub datasets."""
    results = folder / "eval" / "results.json"
    if not results.is_file():
        return None
    from ..probing.evaluation import render_model_card

    evaluations = json.loads(results.read_text())["evaluations"]
    dataset_ids = {}
    for document in evaluations:
        record_path = Path(document["zoo"]) / PUBLISHED_RECORD
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            if record.get("endpoint") == endpoint and document["config"] in record.get("zoos", []):
                dataset_ids[document["zoo"]] = record["repo_id"]
    return render_model_card(folder, evaluations, dataset_ids=dataset_ids, repo_id=repo_id)
