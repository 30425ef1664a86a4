import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hypothesis import settings  # noqa: E402

from catalyst_ttt import pipeline  # noqa: E402
from catalyst_ttt.models import char_tokenizer, new_tiny_model  # noqa: E402
from catalyst_ttt.schema import ModelConfig  # noqa: E402
from helpers.cells import SMOKE, format_taught  # noqa: E402

# Every property test draws the same examples on every run and machine: a failure is reproducible.
settings.register_profile("derandomized", derandomize=True, deadline=None)
settings.load_profile("derandomized")


@pytest.fixture(scope="session")
def taught_once():
    """A tiny model SFT'd on correct alchemy traces until it writes the format, with mixed answers."""
    return format_taught(200)


@pytest.fixture
def taught(taught_once):
    """A private copy of the taught model: tests that train it never change what the next test sees."""
    model, tokenizer = taught_once
    return copy.deepcopy(model), tokenizer


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One phase cache for the session, so the tiny base is pretrained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny(tmp_path, shared_cache):
    """Overrides for a smoke-sized cell whose results go to this test's tmp dir."""

    def make(*extra: str, wandb: str = "disabled", cache: Path | None = None, runs: Path | None = None) -> list[str]:
        return [
            *SMOKE,
            f"runs_dir={runs or tmp_path / 'runs'}",
            f"cache_dir={cache or shared_cache}",
            f"wandb.mode={wandb}",
            *extra,
        ]

    return make


@pytest.fixture(scope="session")
def local_hf_model(tmp_path_factory) -> Path:
    """A tiny random Llama and its tokenizer saved to a local directory, for `model=hf`."""

    directory = tmp_path_factory.mktemp("hf") / "local_llama"
    tokenizer = char_tokenizer()
    shape = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=512)
    new_tiny_model(shape, tokenizer, seed=0).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def untrained_base(local_hf_model) -> list[str]:
    """Overrides whose base is that saved, never trained Llama (`model=hf`): a cell with nothing to pretrain."""
    return ["model=hf", f"model.name_or_path={local_hf_model}"]


@pytest.fixture(autouse=True)
def no_base_pretraining_in_the_fast_suite(request, monkeypatch):
    """`make test-fast` pretrains no base: a test that runs a tiny-model cell in this process is marked slow,
    or its cell starts from `untrained_base`."""
    if request.node.get_closest_marker("slow") is None:

        def refuse(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} builds a tiny base: mark it slow or use untrained_base")

        monkeypatch.setattr(pipeline, "new_tiny_model", refuse)
