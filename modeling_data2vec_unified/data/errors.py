"""Data that cannot be used: examples whose file cannot be decoded (stop at the first, or skip a share of them) and
data of another modality than the model's. Both loaders (map-style and streaming) and every source raise these."""

from __future__ import annotations

import logging

import PIL.Image
import pyarrow as pa

logger = logging.getLogger(__name__)

DECODE_ERRORS = (OSError, ValueError, RuntimeError, SyntaxError, PIL.UnidentifiedImageError)  # soundfile: RuntimeError


class BadExampleError(ValueError):
    """An example's file cannot be decoded (a corrupt image or clip), named by its path."""


class BadExamples:
    """What happens to examples whose file cannot be decoded: stop at the first, naming it (`skip=None`, the default),
    or skip them, counted and logged, stopping once more than the fraction `skip` of the examples are bad."""

    def __init__(self, skip: float | None = None, total: int = 0, quiet: bool = False):
        if skip is not None and not 0.0 <= skip < 1.0:
            raise ValueError(f"--skip_bad_examples is the largest fraction of bad examples to skip, in [0, 1); got {skip}")
        self.skip, self.total, self.skipped, self.quiet = skip, total, {}, quiet  # quiet: a look ahead, not the run

    def handle(self, where: str, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        if self.skip is None:
            raise BadExampleError(
                f"{where} cannot be decoded ({reason}). Fix or remove the file, or pass --skip_bad_examples 0.01 to "
                f"skip such files (counted and logged; the run stops if more than that fraction is bad)"
            ) from error
        if where in self.skipped:  # decoded per batch: met again every epoch, counted once
            return
        self.skipped[where] = reason
        if not self.quiet:
            logger.warning("skipped %s (%s): %d bad example(s) so far", where, reason, len(self.skipped))
        if len(self.skipped) > self.skip * max(self.total, 1):
            raise BadExampleError(
                f"{len(self.skipped)} of {self.total} examples cannot be decoded, more than --skip_bad_examples "
                f"{self.skip:g} allows (the last: {where}; {reason}): check the data"
            ) from error


def example_name(value) -> str | None:
    """A data cell's file path where it has one (an image / audio struct, as a python dict or an arrow scalar)."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if (isinstance(value, pa.Scalar) and pa.types.is_struct(value.type) and "path" in {f.name for f in value.type}
            and value["path"].as_py()):
        return str(value["path"].as_py())
    return None


def modality_error(source: str, held: str, what: str, modality: str) -> ValueError:
    """`source` holds `held` data (`what` shows it), not the model's `modality`: name the flag that fixes it."""
    return ValueError(
        f"{source} holds {held} data ({what}), not {modality}: use --modality {held} (a config with "
        f"modality={held!r}), or give {modality} data"
    )
