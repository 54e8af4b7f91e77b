"""The malloc settings `import tl_core` applies, and the ways to decline them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import tl_core.allocator as a, tl_core; print(a._tuned)"


def _tuned_in_fresh_process(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "TL_LAB_MALLOC"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_import_tunes_glibc_malloc() -> None:
    assert _tuned_in_fresh_process() == "True"


def test_tuning_can_be_turned_off() -> None:
    assert _tuned_in_fresh_process(TL_LAB_MALLOC_TUNING="0") == "False"


def test_users_own_malloc_settings_are_left_alone() -> None:
    assert _tuned_in_fresh_process(MALLOC_ARENA_MAX_="2") == "False"


def test_release_free_memory_gives_freed_heap_back() -> None:
    """After a large block is freed, malloc_trim brings resident memory back down."""
    script = """
import tl_core
from tl_core.allocator import release_free_memory
import torch

def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024

before = rss_mb()
x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB: kept by the heap once freed
del x
kept = rss_mb()
release_free_memory()
print(before, kept, rss_mb())
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    before, kept, after = map(float, out)
    assert kept - before > 50  # the freed block stayed resident (the point of the tuning)
    assert after - before < 20  # and release_free_memory returned it


def test_untuned_process_gives_a_freed_large_block_back_at_once() -> None:
    """The web server untunes: an upload's bytes go back to the system when freed (issue 12),
    where the tuned heap keeps them (the first test's `kept`)."""
    script = """
import tl_core
from tl_core.allocator import untune_malloc

def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024

restored = untune_malloc()
before = rss_mb()
x = bytearray(200 << 20)  # 200 MB, like an upload's bytes
held = rss_mb()
del x
print(restored, before, held, rss_mb())
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    before, held, after = map(float, out[1:])
    assert held - before > 150
    assert after - before < 20
