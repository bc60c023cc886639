"""Fixtures the handler tests share: a journal I/O that fails or holds writes on demand, and an
open Engine on it under the test module's EPOCH."""

from __future__ import annotations

import pytest
from helpers import engine_on

from mwcluster.storage.fsutil import FaultyJournalIO


@pytest.fixture
def io():
    return FaultyJournalIO()


@pytest.fixture
def engine(tmp_path, io, request):
    with engine_on(tmp_path / "data", getattr(request.module, "EPOCH", 7), io) as eng:
        yield eng
