"""Torch dataset of (observation, instruction, action chunk) samples from a zarr cache.

Sample i is frame t of some episode: images and state at t, the instruction, and actions
t .. t + H - 1. Steps past the episode's end repeat its last action and are trained on (as in
Diffusion Policy): demonstrations stop at success, so the last frames' chunks (a lift, a rise
clear of a placed cube) would otherwise teach nothing after the first steps, and a policy
replanning there decodes untrained slots (`LoaderConfig.supervise_past_end=false` flags them
instead). Steps the loss must ignore are flagged in `action_is_pad`: those after a frame whose
executed action was perturbed by a recording fault (`ZarrCache.perturbed`): from t the policy
cannot foresee that push, and the expert's labels after it are a recovery from it, not the plan
at t. Step 0 is always supervised (a label at a perturbed state is the recovery the data is
there to show). Augmentation runs per batch in `collate`.

With `GoalTargets`, a sample also carries where the demonstration's gripper next changes
(`goal_targets`), the target of the policy's auxiliary goal head (`PolicyConfig.goal_aux_weight`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from data.cache import ZarrCache
from vla.processor import ObservationProcessor


@dataclass
class LoaderConfig:
    batch_size: int = 32
    workers: int = 1
    augment: bool = True  # random crop (of policy.crop_area) + colour jitter while training
    jitter: float = 0.1
    # Train on chunk steps past an episode's end (its last action repeated); false: no loss there.
    supervise_past_end: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"data.loader.batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"data.loader.workers must be >= 0 (0 loads in the training process), got {self.workers}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"data.loader.jitter must be in [0, 1), got {self.jitter}")


class ResumableBatches:
    """Endless, seeded batches of (frame, batch seed); `start` skips batches already consumed.

    Epoch e is a permutation drawn from seed + e, split across `world` ranks, so the data
    position after k batches is a function of k alone and a resumed run sees the same stream.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        per_rank = n // world
        if per_rank < batch_size:
            raise ValueError(f"dataset has {n} frames, fewer than one batch of {batch_size} per rank ({world} ranks)")
        self.n, self.batch_size, self.seed, self.start, self.rank, self.world = n, batch_size, seed, start, rank, world
        self.per_epoch = per_rank // batch_size

    def __iter__(self):
        k = self.start
        while True:
            epoch, b = divmod(k, self.per_epoch)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
            mine = perm[self.rank :: self.world]
            idx = mine[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            batch_seed = (self.seed * 1_000_003 + k * self.world + self.rank) % (2**62)
            yield [(i, batch_seed) for i in idx]
            k += 1


@dataclass(frozen=True)
class GoalTargets:
    """Which state dimensions hold the end-effector position and which action dimension
    commands the gripper, and how many gripper events ahead a sample looks."""

    position_dims: tuple[int, int, int]
    gripper_dim: int
    events: int


def goal_targets(
    position: np.ndarray, gripper: np.ndarray, episode_ends: np.ndarray, events: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame t, the end-effector position at each of the next `events` gripper events of
    t's episode, relative to the position at t: (N, events, 3) float32, and which exist (N, events).

    An event is a frame whose gripper command has the other sign than the frame before it (where
    the demonstration starts to grasp or to release); the next ones are those after t. The
    offset is a fact of the scene (where the object to grasp, or the place to put it, is) that
    state and instruction alone cannot give once placements vary, only the images.
    """
    n = len(position)
    out = np.zeros((n, events, 3), np.float32)
    valid = np.zeros((n, events), bool)
    start = 0
    for end in episode_ends:
        closed = gripper[start:end] > 0
        ev = start + 1 + np.flatnonzero(closed[1:] != closed[:-1])  # absolute frame of each event
        frames = np.arange(start, end)
        first = np.searchsorted(ev, frames, side="right")  # first event after each frame
        for k in range(events):
            j = first + k
            ok = j < len(ev)
            valid[start:end, k] = ok
            out[frames[ok], k] = position[ev[j[ok]]] - position[frames[ok]]
        start = end
    return out, valid


class ChunkDataset(Dataset):
    def __init__(
        self,
        cache: ZarrCache,
        chunk_size: int,
        cameras: list[str],
        supervise_past_end: bool = True,
        goal: GoalTargets | None = None,
    ) -> None:
        missing = [c for c in cameras if c not in cache.cameras]
        if missing:
            raise KeyError(f"cache {cache.path} has no cameras {missing}; it has {cache.cameras}")
        self.cache = cache
        self.chunk_size = chunk_size
        self.cameras = cameras
        self.supervise_past_end = supervise_past_end
        ep_of_frame = np.searchsorted(cache.episode_ends, np.arange(cache.num_frames), side="right")
        self.frame_episode = ep_of_frame  # (N,)
        self.goal = self.goal_valid = None
        if goal is not None:
            for name, dim, width in [("position", d, cache.state.shape[1]) for d in goal.position_dims] + [
                ("gripper", goal.gripper_dim, cache.action.shape[1])
            ]:
                if not -width <= dim < width:
                    raise ValueError(f"goal targets: {name} dimension {dim} is outside the cache's width {width}")
            self.goal, self.goal_valid = goal_targets(
                cache.state[:, list(goal.position_dims)],
                cache.action[:, goal.gripper_dim],
                cache.episode_ends,
                goal.events,
            )

    def __len__(self) -> int:
        return self.cache.num_frames

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """item: a frame index, or (frame index, augmentation seed of its batch)."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        c = self.cache
        ep = int(self.frame_episode[i])
        end = int(c.episode_ends[ep])
        idx = np.arange(i, i + self.chunk_size)
        past_end = idx >= end
        idx = np.minimum(idx, end - 1)
        pad = past_end.copy() if not self.supervise_past_end else np.zeros_like(past_end)
        # step k is unsupervised when any executed action t .. t + k - 1 was perturbed
        hit = np.cumsum(c.perturbed[idx] & ~past_end) > 0
        pad[1:] |= hit[:-1]
        sample = {
            "images": np.stack([np.asarray(c.images[cam][i]) for cam in self.cameras]),  # (N, H, W, 3)
            "state": c.state[i],
            "instruction": c.tasks[int(c.task_index[ep])],
            "actions": c.action[idx],  # (H, D)
            "action_is_pad": pad,
            "seed": seed,
        }
        if self.goal is not None:
            sample["goal"], sample["goal_valid"] = self.goal[i], self.goal_valid[i]
        return sample


class Collate:
    """Stack samples and run the policy's own observation processing: the image pipeline (a
    random crop of the policy's crop area plus colour jitter while training, the centre crop
    otherwise), state normalisation and the VLM's processor. Runs in the loader's workers, so
    the model's forward pass gets ready tensors (`vla.model` documents the batch)."""

    def __init__(self, cfg: LoaderConfig, processor: ObservationProcessor, train: bool = True) -> None:
        self.cfg, self.processor, self.train = cfg, processor, train

    def __call__(self, samples: list[dict]) -> dict:
        frames = torch.from_numpy(np.stack([s["images"] for s in samples]))  # (B, N, H, W, 3) uint8
        augment = self.train and self.cfg.augment
        seed = samples[0].get("seed")
        gen = None if seed is None or not augment else torch.Generator().manual_seed(seed)
        images = self.processor.images(frames, augment, self.cfg.jitter, gen)  # (B, N, 3, S, S)
        state = torch.from_numpy(np.stack([s["state"] for s in samples])).float()  # (B, S) raw
        instructions = [s["instruction"] for s in samples]
        return {
            **self.processor.model_inputs(images, state, instructions),  # vlm tensors, normalised state
            "instruction": instructions,
            "actions": torch.from_numpy(np.stack([s["actions"] for s in samples])).float(),  # (B, H, D)
            "action_is_pad": torch.from_numpy(np.stack([s["action_is_pad"] for s in samples])),  # (B, H)
            **{
                key: torch.from_numpy(np.stack([s[key] for s in samples]))  # (B, events, 3), (B, events)
                for key in ("goal", "goal_valid")
                if key in samples[0]
            },
        }
