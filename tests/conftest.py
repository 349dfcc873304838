import os
import tempfile

# HF libraries read these at import time: never touch the network, never write into the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hyperrep-test-hf-"))
os.environ.setdefault("HYPERREP_CACHE", tempfile.mkdtemp(prefix="hyperrep-test-cache-"))
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest
import torch

# The tests use tiny tensors, for which one thread is fastest and least sensitive to a busy machine; one thread
# also fixes the reduction order, so outputs compare bit for bit with the remote-code subprocess.
torch.set_num_threads(1)


@pytest.fixture
def fresh_accelerator_state():
    """Forgets accelerate's process-wide state after a test that trained in-process, so the next one starts clean."""
    yield
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
