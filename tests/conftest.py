import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(1)  # tiny models are overhead-bound; one thread is as fast and never oversubscribes


@pytest.fixture(scope="session")
def tiny_pipe():
    from ddim_edit.testing import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture()
def tiny_model(tiny_pipe):
    from ddim_edit.model import EditModel

    return EditModel.from_pipeline(tiny_pipe, name="tiny")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_pipe):
    """The tiny pipeline saved as a local diffusers folder (what --model takes)."""
    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    tiny_pipe.save_pretrained(path, safe_serialization=True)
    return path
