"""Checks of user input that run before anything is written: output folders, devices, whether the Hub answers.

(Network files are checked by ``hyperrep_hf.models.hyperrep.pipelines.check_safetensors_file``, which travels as
remote code.)

Each raises a ``ValueError`` (or ``FileNotFoundError``) whose message names the value and says what to do, so
that the command line prints one clear line and exits ≠ 0 instead of a traceback after a half-written folder.

``say`` prints the one-line progress messages of the library's long jobs.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse


class OutputFolderError(ValueError):
    """An output folder that cannot be created or written to."""


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """Checks that ``path`` is, or can become, a writable folder — without creating it.

    The nearest existing ancestor must be a folder and must accept a new file (tested by creating and removing a
    temporary file in it, which also catches read-only file systems and permission rules that ``os.access``
    does not see).

    Args:
        path: The folder a command will write into.
        option: How the user named it (for the message).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OutputFolderError: ``path`` is a file, lies below a file, or cannot be written to.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{option} {path} is a file, not a folder: choose a folder (it may not exist yet).")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputFolderError(
            f"{option} {path} cannot be created: {existing} is a file, not a folder. Choose another {option}."
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".hyperrep-write-test-", dir=existing)
    except OSError as error:
        raise OutputFolderError(
            f"{option} {path} is not writable ({existing}: {error.strerror or error}). Choose a folder you can "
            "write to, or change its permissions."
        ) from None
    os.close(handle)
    os.unlink(probe)
    return path


def check_device(device: str, option: str = "--device") -> None:
    """Checks that PyTorch knows ``device`` and that this machine has it (CUDA / MPS built in and present).

    Raises:
        ValueError: An unknown device string, a CPU-only PyTorch asked for CUDA, or a CUDA index beyond the GPUs.
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{option} {device!r} is not a device PyTorch knows (e.g. cpu, cuda).") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(
                f"{option} {device}: this PyTorch {torch.__version__} ({build}) sees no CUDA GPU. Use {option} cpu, "
                "or install a CUDA build of PyTorch on a machine with an NVIDIA GPU."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})."
            )
    elif parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{option} {device}: MPS (Apple GPU) is not available here. Use {option} cpu.")


def resolve_device(device: str, option: str = "--device") -> str:
    """``"auto"`` → ``"cuda"`` when PyTorch sees a CUDA GPU, else ``"cpu"``; any other device is checked and returned.

    Raises:
        ValueError: As :func:`check_device`.
    """
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device, option)
    return device


def say(progress: bool, message: str) -> None:
    """Prints one progress line to stdout (flushed) when ``progress`` is on."""
    if progress:
        print(message, flush=True)


def hub_endpoint() -> str:
    """The Hub the HF libraries talk to: ``HF_ENDPOINT`` as huggingface_hub read it (default huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline() -> bool:
    """Whether the Hub may not be used: huggingface_hub's offline mode, or ``datasets``' own (HF_DATASETS_OFFLINE).

    Both are read when the libraries are imported (set the variables before, as for every HF library).
    """
    from datasets import config as datasets_config
    from huggingface_hub import is_offline_mode

    return is_offline_mode() or datasets_config.HF_HUB_OFFLINE


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a TCP connection (one probe, at most ``timeout`` seconds).

    Without network, huggingface_hub retries each request with back-off for about half a minute before it gives
    up; a name that is neither a local folder nor in the cache is reported in a second instead.
    """
    endpoint = urlparse(hub_endpoint())
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_unreachable() -> bool:
    """Whether huggingface_hub would use the network (it is not in offline mode) but the Hub endpoint does not answer.

    Then only the Hub cache can serve a repo: callers look there (``local_files_only=True``) and name a miss at once.
    """
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and not hub_reachable()
