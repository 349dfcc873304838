"""Stage 2, the hyper-representation model: tokens, encoder / decoder, z̄, probe heads, the pipeline.

Every module here except this one travels to the Hub as remote code (``hyperrep_hf.hub.publish.remote_code_files``),
so they are flat siblings importing third-party packages and each other with single-dot imports only; nothing
here may import the rest of ``hyperrep_hf``. This file stays empty for the same reason: loading the flat files
from a model folder never runs it.
"""
