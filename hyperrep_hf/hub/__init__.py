"""Stage 5, the Hub: publishing model and zoo folders in one commit (``publish``) and the cards (``cards``)."""

from .publish import PushError, push, remote_code_files

__all__ = ["PushError", "push", "remote_code_files"]
