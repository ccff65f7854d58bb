"""core/tree/failure_class.py: every failed attempt gets the class that says what to do about it, from the exact
errors clusters give (a wrapped error is classified by its cause)."""

from __future__ import annotations

import errno
import os

import pytest

from nestling.core.tree.failure_class import FailureClass, classify, is_storage_error
from nestling.execute.run_attempt import failure_class

NODE_ERRORS = [
    RuntimeError("CUDA error: uncorrectable ECC error encountered"),
    RuntimeError("CUDA error: unspecified launch failure\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1275, unhandled system error, NCCL version 2.18.1"),
    RuntimeError("Xid 79: GPU has fallen off the bus"),
]


@pytest.mark.parametrize("exc", NODE_ERRORS, ids=lambda e: str(e)[:30])
def test_a_broken_gpu_or_node_is_a_node_fault(exc: BaseException) -> None:
    assert classify(exc) is FailureClass.NODE


def test_a_missing_gpu_is_the_nodes_fault_only_where_gpus_were_given() -> None:
    exc = RuntimeError("No CUDA GPUs are available: no CUDA-capable device is detected")
    assert classify(exc, gpus_given=True) is FailureClass.NODE
    assert classify(exc, gpus_given=False) is FailureClass.USER  # a CPU job that asked for CUDA: the user's
    assert failure_class(exc, {"SLURM_JOB_GPUS": "0"}) is FailureClass.NODE
    assert failure_class(exc, {"CUDA_VISIBLE_DEVICES": "1"}) is FailureClass.NODE
    assert failure_class(exc, {"CUDA_VISIBLE_DEVICES": ""}) is FailureClass.USER


@pytest.mark.parametrize("number", [errno.ESTALE, errno.EIO, errno.ETIMEDOUT, errno.ECONNRESET])
def test_a_shared_file_system_hiccup_is_transient(number: int) -> None:
    exc = OSError(number, os.strerror(number), "/shared/x")
    assert classify(exc) is FailureClass.TRANSIENT_IO
    wrapped = RuntimeError("could not read the sample")
    wrapped.__cause__ = exc  # a task that wraps the error keeps it as the cause
    assert classify(wrapped) is FailureClass.TRANSIENT_IO


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_file_system_or_quota_is_storage(number: int) -> None:
    exc = OSError(number, os.strerror(number))
    assert classify(exc) is FailureClass.STORAGE and is_storage_error(exc)
    context = RuntimeError("saving the checkpoint failed")
    context.__context__ = exc
    assert classify(context) is FailureClass.STORAGE and is_storage_error(context)
    assert not is_storage_error(OSError(errno.EACCES, "denied"))


def test_out_of_memory_is_retried_alone_only_when_the_gpu_was_shared() -> None:
    import torch

    exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert classify(exc, memory_shared=True) is FailureClass.OOM_SHARED
    assert classify(exc, memory_shared=False) is FailureClass.OOM
    assert classify(RuntimeError("CUDA out of memory. Tried to allocate 20 MiB")) is FailureClass.OOM
    assert failure_class(exc, {"NESTLING_MEMORY_FRACTION": "0.5"}) is FailureClass.OOM_SHARED
    assert failure_class(exc, {"NESTLING_MEMORY_FRACTION": "1"}) is FailureClass.OOM


def test_anything_else_is_the_users_and_only_three_classes_are_retried() -> None:
    assert classify(ValueError("bad hyperparameter")) is FailureClass.USER
    assert classify(OSError(errno.ENOENT, "No such file or directory")) is FailureClass.USER  # a wrong data path
    assert classify(KeyError("val/acc")) is FailureClass.USER
    assert [c.value for c in FailureClass if c.is_retryable()] == ["node", "transient_io", "oom_shared"]
    assert FailureClass.named("storage") is FailureClass.STORAGE and FailureClass.named("meteor") is None
