"""A Vulkan driver for SAPIEN, which renders ManiSkill's scenes.

A GPU user's own driver is used as it is. On a machine without one, SAPIEN 3 needs Mesa's
CPU driver (lavapipe) from Mesa >= 24.3; Debian 12 ships Mesa 22, whose lavapipe fails with
"failed to find a rendering device". `install()` fetches bookworm-backports' Mesa 25 package
with a private apt configuration and unpacks it into this project's cache without touching the
system; `configure()` points the Vulkan loader at it (`VK_ICD_FILENAMES`, read when SAPIEN first
builds its renderer). Whether a driver renders is asked of a child process, since a process
whose renderer failed to start cannot try another driver.

    python -m envs.simpler.vulkan            # report what renders; install lavapipe if nothing does
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "mesa-vulkan-drivers"
SUITE = "bookworm-backports"  # Mesa 25.0.7 there; bookworm's own 22.3 cannot render for SAPIEN
LIBRARY = "usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
PROBE = "import sapien; sapien.render.RenderSystem()"
_CHOSEN: str | None = None


def cache_dir() -> Path:
    from envs.libero.conventions import config_dir  # the project's cache root (VLA_CACHE)

    return config_dir().parent / "simpler" / "mesa"


def lavapipe_icd() -> Path | None:
    """The cached lavapipe's ICD file, when `install()` has run."""
    icd = cache_dir() / "lvp_icd.json"
    return icd if icd.is_file() and (cache_dir() / "root" / LIBRARY).is_file() else None


def renders(env: dict[str, str] | None = None, timeout: float = 120) -> tuple[bool, str]:
    """(whether SAPIEN can start its renderer under `env`, the error's last line if not)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, f"starting SAPIEN's renderer took over {timeout:.0f} s"
    if out.returncode == 0:
        return True, ""
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit status {out.returncode}"


def install() -> Path:
    """Download Mesa's Vulkan drivers from Debian bookworm-backports and unpack them into the
    cache (nothing installed system-wide; needs apt-get and dpkg). Returns the ICD file."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError(
            "no Vulkan driver renders and this is not a Debian-like system (no apt-get/dpkg) to fetch Mesa's "
            "lavapipe from: install Mesa >= 24.3's Vulkan drivers (mesa-vulkan-drivers) or use a GPU's driver"
        )
    root = cache_dir()
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    apt = tmp / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True)
    (apt / "sources.list").write_text(f"deb http://deb.debian.org/debian {SUITE} main\n")
    options = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        "-oDir::Etc::SourceParts=/nonexistent",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oDebug::NoLocking=1",
        *(["-oAPT::Sandbox::User=root"] if os.geteuid() == 0 else []),  # root: no _apt user for private folders
    ]
    for args in (["update"], ["download", f"{PACKAGE}/{SUITE}"]):
        out = subprocess.run(["apt-get", *options, *args], cwd=apt / "debs", capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"apt-get {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    debs = sorted((apt / "debs").glob("*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {PACKAGE}/{SUITE} wrote no package into {apt / 'debs'}")
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(tmp / "root")], check=True)
    library = tmp / "root" / LIBRARY
    if not library.is_file():
        raise RuntimeError(f"{debs[0].name} holds no {LIBRARY}")
    icd = {"file_format_version": "1.0.0", "ICD": {"library_path": str(root / "root" / LIBRARY), "api_version": "1.3"}}
    (tmp / "lvp_icd.json").write_text(json.dumps(icd))
    (tmp / "version").write_text(debs[0].name + "\n")
    shutil.rmtree(apt)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)  # atomic: a half-unpacked driver is never found
    return root / "lvp_icd.json"


def configure(install_missing: bool = False) -> str:
    """Make SAPIEN's renderer work in this process and say which driver it uses. Order: the
    user's VK_ICD_FILENAMES or the system's drivers if they render, else the cached lavapipe
    (fetched first when `install_missing`). Raises RuntimeError saying what to do otherwise."""
    global _CHOSEN
    if _CHOSEN is not None:
        return _CHOSEN
    ok, why = renders()
    if ok:
        _CHOSEN = f"the system's Vulkan driver ({os.environ.get('VK_ICD_FILENAMES') or 'default'})"
        return _CHOSEN
    if os.environ.get("VK_ICD_FILENAMES"):
        raise RuntimeError(f"VK_ICD_FILENAMES={os.environ['VK_ICD_FILENAMES']} does not render: {why}")
    icd = lavapipe_icd()
    if icd is None and install_missing:
        icd = install()
    if icd is None:
        raise RuntimeError(
            f"SAPIEN cannot render with this machine's Vulkan drivers ({why}); fetch Mesa's CPU driver into the "
            "cache with `python -m envs.simpler.vulkan` (bash .ci/setup does), or install a GPU's Vulkan driver"
        )
    ok, why_lvp = renders({"VK_ICD_FILENAMES": str(icd)})
    if not ok:
        raise RuntimeError(f"the cached lavapipe ({icd}) does not render either: {why_lvp}")
    os.environ["VK_ICD_FILENAMES"] = str(icd)
    _CHOSEN = f"Mesa lavapipe on the CPU ({icd})"
    return _CHOSEN


def main() -> None:
    try:
        print("SAPIEN renders with", configure(install_missing=True))
    except (RuntimeError, subprocess.CalledProcessError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
