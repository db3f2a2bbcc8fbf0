import logging
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


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Entry points run in-process (`eval_main()` under hydra) configure the root logger with a
    handler bound to this test's captured stdout, which pytest closes after the test: a later
    test's server thread logging through it would fail with "I/O operation on closed file".
    Each test leaves the root logger as it found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
