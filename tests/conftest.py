import os
import sys
import warnings

import pytest
import torch

# pytester runs pytest in-process on a temporary project (tests/test_packaging.py checks the strict settings)
pytest_plugins = ["pytester"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _quiet_lightning_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        yield
