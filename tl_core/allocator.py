"""Keep glibc's malloc from handing tensor memory back to the kernel after every batch.

By default glibc serves large blocks with mmap and returns them with munmap, and trims the
heap as soon as its free top passes a small threshold. A CNN on the CPU allocates and frees
activations of tens of megabytes every batch, so each batch faults in and zeroes fresh pages:
on this project's 2-core machine more than half the time of an EfficientNet-Lite0 forward
pass went to the kernel (sys time). Serving those blocks from the heap and keeping up to
`TRIM_BYTES` of freed memory for reuse made Lite0 inference 2.3-2.8x and training 1.16x
faster (`scripts/bench_malloc.py`; README "Speed"). Freed memory above that is still returned,
and `release_free_memory` hands it all back between runs.

jemalloc or tcmalloc through LD_PRELOAD do the same job, but need to be installed and set
before the process starts; `mallopt` works from inside a running Python process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
TRIM_BYTES = 1 << 30  # freed memory the heap keeps for reuse before returning it (1 GiB)
# For `untune_malloc` (the web server): blocks from 4 MiB up (an upload's bytes) are mapped
# on their own and unmapped when freed, smaller ones (one picture's activations in Predict
# stay under 2 MB) are served by the heap, which returns its free top past 64 MiB.
GLIBC_MMAP_MAX = 65536  # glibc's default
SERVER_MMAP_THRESHOLD = 4 << 20
SERVER_TRIM_BYTES = 64 << 20

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return None
    return _libc


_tuned: bool | None = None


def tune_malloc() -> bool:
    """Apply the settings once per process; False where they do not apply or were declined.

    Skipped on anything but Linux with glibc, when `TL_LAB_MALLOC_TUNING=0`, and when the
    user tuned malloc through its own environment variables (`MALLOC_*_`).
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux") or os.environ.get("TL_LAB_MALLOC_TUNING") == "0":
        return False
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False
    libc = _load_libc()
    mallopt = getattr(libc, "mallopt", None)  # musl and others have none
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    return _tuned


def untune_malloc() -> bool:
    """Let large blocks be mapped again, and keep less freed memory; True where applied.

    For the web server, which imports `tl_core` but trains nothing: what it allocates in
    large blocks are uploads (hundreds of MB each, `tl_core/server_gc.py`), which should go
    back to the system as soon as they are freed, not stay in the heap for reuse. (glibc's
    own defaults cannot come back: its thresholds stop adapting once one is set.)
    """
    global _tuned
    if not tune_malloc():
        return False
    mallopt = _load_libc().mallopt
    _tuned = False
    return all(
        mallopt(option, value)
        for option, value in (
            (M_MMAP_MAX, GLIBC_MMAP_MAX),
            (M_MMAP_THRESHOLD, SERVER_MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, SERVER_TRIM_BYTES),
        )
    )


def release_free_memory() -> None:
    """Return the heap's free memory to the system now (glibc `malloc_trim`), e.g. between runs."""
    if sys.platform.startswith("linux"):
        trim = getattr(_load_libc(), "malloc_trim", None)  # glibc only
        if trim is not None:
            trim(0)
