"""TensorFlowOnSpark ``gpu_info``: free GPUs of this host according to nvidia-smi.

Built on :mod:`tfos.cluster.gpus` (``query_gpus``); a GPU counts as busy when it runs a
compute process, has more than 10% of its memory in use or is more than 50% utilised.
"""

from __future__ import annotations

import logging
import random
import time

logger = logging.getLogger(__name__)

MAX_RETRIES = 3  #: attempts to find enough free GPUs
AS_STRING = "string"
AS_LIST = "list"


def is_gpu_available() -> bool:
    """True when nvidia-smi lists at least one GPU on this host."""
    from tfos.cluster.gpus import query_gpus

    return bool(query_gpus())


def get_gpus(num_gpu: int = 1, worker_index: int = -1, format: str = AS_STRING) -> str | list[str]:  # noqa: A002
    """``num_gpu`` free GPU indices: a comma-separated string (``AS_STRING``) or a list (``AS_LIST``).

    ``worker_index`` -1 picks at random; otherwise GPUs ``worker_index * num_gpu`` onward
    (wrapping around). Retries ``MAX_RETRIES`` times, waiting 30 s more each time, then raises.
    """
    from tfos.cluster.gpus import query_gpus

    if format not in (AS_STRING, AS_LIST):
        raise ValueError(f"unknown GPU format {format!r}; use gpu_info.AS_STRING or gpu_info.AS_LIST")
    free: list[str] = []
    for attempt in range(MAX_RETRIES):
        gpus = query_gpus() or []
        free = [g.index for g in gpus if g.busy_reason(0.1, 50) is None]
        if len(free) >= num_gpu:
            break
        logger.warning("want %d free GPU(s), found %d of %d", num_gpu, len(free), len(gpus))
        if attempt < MAX_RETRIES - 1:
            time.sleep(30 * (attempt + 1))
    else:
        raise RuntimeError(f"unable to find {num_gpu} free GPU(s); free now: {free}")
    if worker_index == -1:
        random.shuffle(free)
        chosen = free[:num_gpu]
    else:
        start = worker_index * num_gpu
        if start + num_gpu > len(free):
            start = start % len(free)
        chosen = (free + free)[start:start + num_gpu]
    logger.info("proposed GPU(s): %s", chosen)
    return chosen if format == AS_LIST else ",".join(chosen)
