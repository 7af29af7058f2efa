"""Fixtures shared by the test modules (the plain helpers are in helpers.py)."""

from __future__ import annotations

import pytest
from helpers import run_cli


@pytest.fixture
def run_mmz(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args):
        code = run_cli(*args)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: tiny convs gain nothing from threads, and on a small busy machine
    two threads wait on each other many times longer than they compute."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
