"""Why an attempt failed, as a class that says what to do about it (run_result.json's and run_infos' `failure_class`).

At 1,000-10,000 runs the failures that hurt are not in the user's code: a GPU with ECC errors, a stale NFS handle, a
full quota. Each class has one response, taken in the same command (execute/retry.py; nf-core retries by exit class,
Ray by `FailureConfig(max_failures)`):

  node          the node is broken (GPU ECC/Xid, a GPU that vanished, an NCCL system error): rerun elsewhere, keep
                the launch off the node
  transient_io  the shared file system hiccupped (ESTALE, EIO, ETIMEDOUT, a connection reset): retry after a backoff
  oom_shared    out of GPU memory while K runs shared the GPU (--runs_per_gpu K): rerun alone on the GPU
  oom           out of GPU memory alone: the run needs less memory or a larger GPU; no retry
  storage       the file system is full (ENOSPC, EDQUOT): retrying cannot help; stop handing out work
  user          anything else: the task's code or data; no retry, fail fast as before

Preemption and time limits are no failure: the attempt saves and the task is requeued (array_task.py), so no class
is recorded for them. `classify` reads the exception and its chain (a task may wrap the error it met).
"""

from __future__ import annotations

import errno
import re

from nestling.core.tree.recorded_enum import RecordedEnum


class FailureClass(RecordedEnum):
    NODE = "node"
    TRANSIENT_IO = "transient_io"
    OOM_SHARED = "oom_shared"
    OOM = "oom"
    STORAGE = "storage"
    USER = "user"

    def is_retryable(self) -> bool:
        """Another attempt can succeed without anyone changing anything (elsewhere, later, or alone on its GPU)."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({FailureClass.NODE, FailureClass.TRANSIENT_IO, FailureClass.OOM_SHARED})

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# a shared file system that is there but did not answer this time: NFS/Lustre after a server failover, a network blip
TRANSIENT_IO_ERRNOS = frozenset({
    errno.ESTALE, errno.EIO, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOTCONN, errno.EREMOTEIO,
})  # fmt: skip
# What a broken GPU or node says, from CUDA, the driver (Xid), NCCL and PyTorch (MFC#1748, Toil#5400).
NODE_PATTERNS = re.compile(
    r"uncorrectable ECC error|ECC error encountered|\bXid\b|GPU is lost|fallen off the bus"
    r"|unhandled system error|NCCL error.*(system|remote process exited|network)"
    r"|CUDA error: (an illegal instruction|unspecified launch failure|uncorrectable)"
    r"|cuda(GetDeviceCount|Init)|CUDA driver initialization failed",
    re.IGNORECASE,
)
# Only a fault when the node was given GPUs: a CPU job that asks for CUDA has a user error.
NO_GPU_PATTERNS = re.compile(
    r"no CUDA-capable device is detected|CUDA-capable device\(s\) is/are busy or unavailable"
    r"|Found no NVIDIA driver|CUDA unknown error",
    re.IGNORECASE,
)
OOM_PATTERNS = re.compile(r"CUDA out of memory|out of memory on device|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and every cause or context behind it, outermost first (cycles stopped)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in out):
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def os_errno(exc: BaseException) -> int | None:
    """The errno of the first OSError in the chain (a task that wraps it keeps it as the cause)."""
    for link in chain(exc):
        if isinstance(link, OSError) and link.errno is not None:
            return link.errno
    return None


def is_storage_error(exc: BaseException) -> bool:
    """A full file system or quota anywhere in the chain."""
    return os_errno(exc) in STORAGE_ERRNOS


def classify(exc: BaseException, *, gpus_given: bool = False, memory_shared: bool = False) -> FailureClass:
    """The class of a failed attempt from its exception. `gpus_given`: the job was given GPUs (a GPU that is then
    missing is the node's fault); `memory_shared`: K runs shared the GPU (--runs_per_gpu, NESTLING_MEMORY_FRACTION)."""
    number = os_errno(exc)
    if number in STORAGE_ERRNOS:
        return FailureClass.STORAGE
    texts = [f"{type(link).__name__}: {link}" for link in chain(exc)]
    if any(type(link).__name__ == "OutOfMemoryError" for link in chain(exc)) or any(
        OOM_PATTERNS.search(t) for t in texts
    ):
        return FailureClass.OOM_SHARED if memory_shared else FailureClass.OOM
    if any(NODE_PATTERNS.search(t) for t in texts) or (gpus_given and any(NO_GPU_PATTERNS.search(t) for t in texts)):
        return FailureClass.NODE
    if number in TRANSIENT_IO_ERRNOS:
        return FailureClass.TRANSIENT_IO
    return FailureClass.USER
