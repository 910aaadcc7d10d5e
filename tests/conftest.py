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


@pytest.fixture()
def offline(monkeypatch):
    """Make any hub access fail: the single-file path must work from local files alone."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
