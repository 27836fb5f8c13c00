"""Process set-up shared by every swell command."""

from __future__ import annotations

import platform

import pytest

from swell.cli import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_malloc_keeps_megabyte_buffers_on_the_heap() -> None:
    assert keep_freed_memory() is True
