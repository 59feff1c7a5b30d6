"""The pipeline's one error family. Every failure the pipeline reports to a person is a
``PipelineError``: its message is one line that names the input (integration, field, file,
variable), and ``transient`` says whether a later attempt may succeed (throttled, unreachable,
cut off) so that the Dagster layer knows whether a retry is worth it.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A failure with a one-line message; ``transient``: worth trying again later."""

    transient: bool = False

    def __init__(self, message: str = "", *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may help: only pipeline errors can say so."""
    return isinstance(exc, PipelineError) and exc.transient
