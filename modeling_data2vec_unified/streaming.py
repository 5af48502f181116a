"""`--streaming`'s names at their import path from before the `data/` package (kept for users' code). The code is in
`data/streaming.py` (the stream: `data/sources.py`; the per-row preparation, map-style's: `data/preparation.py`)."""

from .data.preparation import IMAGE_STATS_ROWS, AudioRateError, ShortClip  # noqa: F401 (re-exported)
from .data.sources import AUDIO_STRUCT, STREAM_LOADERS, open_stream  # noqa: F401
from .data.streaming import (  # noqa: F401
    MIN_ROWS_FOR_FRACTION,
    STREAM_SEED_TAG,
    StreamingExamples,
    StreamPosition,
    load_streaming_data,
    stream_batches,
)

__all__ = ["StreamPosition", "StreamingExamples", "load_streaming_data", "open_stream", "stream_batches"]
