"""Fixtures shared by the training tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: the CI box has 2 cores shared with other jobs, more only oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
