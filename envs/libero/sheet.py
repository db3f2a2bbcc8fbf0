"""One image per LIBERO suite with the agentview of every task from its first official initial
state, numbered in the suite's task order (what a reader of the results table should picture).

    python -m envs.libero.sheet --suite libero_spatial --out docs/images/libero_spatial.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def task_sheet(suite: str, size: int = 192, columns: int = 5, render_mode: str = "libero") -> np.ndarray:
    """(rows * size, columns * size, 3) uint8: task i's view at row i // columns, column i % columns."""
    from PIL import Image, ImageDraw

    from envs.libero.env import LiberoEnv, suite_tasks

    tasks = suite_tasks(suite)
    rows = -(-len(tasks) // columns)
    sheet = np.zeros((rows * size, columns * size, 3), dtype=np.uint8)
    for i, task in enumerate(tasks):
        env = LiberoEnv(suite, task, image_size=size, render_mode=render_mode)
        try:
            obs, _ = env.reset(seed=0, options={"init_state": 0})
        finally:
            env.close()
        tile = Image.fromarray(obs["agentview"])
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, 0, 22, 16), fill=(0, 0, 0))
        draw.text((4, 2), str(i), fill=(255, 255, 255))
        r, c = divmod(i, columns)
        sheet[r * size : (r + 1) * size, c * size : (c + 1) * size] = np.asarray(tile)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--out", required=True, help="an image file (.jpg or .png)")
    parser.add_argument("--size", type=int, default=192, help="pixels per task")
    parser.add_argument("--columns", type=int, default=5)
    args = parser.parse_args()
    from PIL import Image

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(task_sheet(args.suite, args.size, args.columns)).save(out, quality=85)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
