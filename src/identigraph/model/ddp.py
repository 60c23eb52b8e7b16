"""Multi-GPU (or multi-process CPU) training under ``torchrun``.

``torchrun --nproc_per_node=N -m identigraph.cli train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; this opens
the process group (NCCL on GPUs, gloo on CPU), pins each rank to its GPU, and always closes the group.
Training itself switches to sampled mini-batches with equal shards per rank and DDP gradient averaging
(``train.train``), so every rank ends with the same weights and rank 0 writes the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


@contextmanager
def distributed_context() -> Iterator[int]:
    """Yields this process's rank; a plain run (no torchrun) is rank 0 of 1 without a process group."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        yield dist.get_rank() if dist.is_initialized() else 0
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()
