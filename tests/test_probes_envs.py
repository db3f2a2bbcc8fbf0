"""Probes of issue #36 ("Nothing lost, nothing silent, round two") on environments and
evaluation. Each test failed on the code before its fix:

- `test_every_public_libero_entry_sets_up_first_and_never_prompts`: `make_env("libero_object",
  task)` (and `LiberoEnv`, `init_states`) as a process's first LIBERO call imported LIBERO
  before the offline set-up: LIBERO's "(Y/N)" prompt, an EOFError without a terminal, and
  `~/.libero` created.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

OBJECT_TASK = "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
ROOT = Path(__file__).resolve().parents[1]


def _fresh_env(home: Path) -> dict:
    """A fresh machine's environment: an empty HOME and no LIBERO config from this process
    (the test session's own set-up exports LIBERO_CONFIG_PATH)."""
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    for key in ("LIBERO_CONFIG_PATH", "VLA_CACHE"):
        env.pop(key, None)
    return env


# Each runs as the first LIBERO call of a fresh process.
_ENTRIES = {
    "make_env": f"from envs.registry import make_env; make_env('libero_object', {OBJECT_TASK!r}, 32).close()",
    "LiberoEnv": f"from envs.libero import LiberoEnv; LiberoEnv('libero_object', {OBJECT_TASK!r}, 32).close()",
    "init_states": f"from envs.libero import init_states; print(len(init_states('libero_object', {OBJECT_TASK!r})))",
    "suite_tasks": "from envs.registry import suite_tasks; print(len(suite_tasks('libero_object')))",
}


@pytest.mark.parametrize("entry", list(_ENTRIES))
def test_every_public_libero_entry_sets_up_first_and_never_prompts(tmp_path, entry):
    out = subprocess.run(
        [sys.executable, "-c", _ENTRIES[entry]],
        stdin=subprocess.DEVNULL,  # a prompt would read EOF here (and wait forever on a terminal)
        capture_output=True,
        text=True,
        env=_fresh_env(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert "(Y/N)" not in text and "EOFError" not in text, text[-3000:]
    assert out.returncode == 0, text[-3000:]
    assert not (tmp_path / ".libero").exists()  # LIBERO's own default config folder
    assert (tmp_path / ".cache" / "vla-stack" / "libero" / "config.yaml").is_file()
