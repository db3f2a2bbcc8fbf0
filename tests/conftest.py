import os

import pytest

# Offline and headless for every test: nothing may reach a model hub, rendering uses EGL.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def debug_data_root(tmp_path_factory):
    """Where the debug preset's demonstrations live for this session: recorded by the first
    training test that asks for them, reused by the others."""
    return tmp_path_factory.mktemp("data") / "debug"
