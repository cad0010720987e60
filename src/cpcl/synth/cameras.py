"""Cameras as fixed entities (SynthConfig.cameras): a network of cameras, each with its own colour cast,
exposure, resolution, background and view of the walkway, and a person's images taken by different ones.

Without it every image draws its own camera (`scene.sample_scene`). With it, the scene is drawn as
before and then seen through the image's camera (`through_camera`), from a stream of its own, so
the other draws do not move.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cpcl.synth.config import SynthConfig
from cpcl.synth.scene import (BACKGROUNDS, SHIFTED_CAMERAS, SHIFTED_LOW_RES, STANDARD_LOW_RES, VIEWS, Scene)
from cpcl.synth.streams import CAMERA_CODE, stream


@dataclass(frozen=True)
class Camera:
    """One camera of the network: what every image it takes shares."""

    index: int  # position in the network
    cast: tuple[float, float, float]  # per-channel gain (white balance)
    brightness: float  # exposure gain
    contrast: float  # contrast around the mean
    saturation: float  # colour saturation
    low_res: float  # resolution factor (1 = full detail)
    noise: float  # sensor noise sd (0..255)
    background: str  # what it looks at, one of BACKGROUNDS
    views: tuple[float, float, float, float]  # probability of each of VIEWS (front, back, left, right)


def camera_network(cfg: SynthConfig) -> tuple[Camera, ...]:
    """The `cfg.cameras` cameras of the dataset of `cfg.seed` (shared by its splits)."""
    rng = stream([cfg.seed], CAMERA_CODE)
    order = rng.permutation(len(BACKGROUNDS))
    base = np.array(list(VIEWS.values()))
    cameras = []
    for index in range(cfg.cameras):
        views = base * np.exp(rng.normal(0.0, 0.7, size=len(base)))
        views = tuple(float(v) for v in views / views.sum())
        if cfg.shifted_look:
            gains = np.asarray(SHIFTED_CAMERAS[index % len(SHIFTED_CAMERAS)]) * rng.normal(1.0, 0.04, size=3)
            low_res = float(rng.uniform(*(cfg.low_res_range or SHIFTED_LOW_RES)))
            look = dict(saturation=float(rng.uniform(0.45, 0.75)), contrast=float(rng.uniform(0.6, 0.9)),
                        noise=float(rng.uniform(4.0, 9.0)))
        else:
            gains = np.clip(rng.normal(1.0, 0.05, size=3), 0.88, 1.12)
            low_res = float(rng.uniform(*(cfg.low_res_range or STANDARD_LOW_RES))) if rng.random() < 0.25 else 1.0
            look = dict(saturation=1.0, contrast=float(rng.uniform(0.75, 1.12)), noise=float(rng.uniform(1.0, 5.0)))
        cameras.append(Camera(index=index, cast=tuple(float(g) for g in gains),
                              brightness=float(np.clip(rng.normal(1.0, 0.12), 0.7, 1.25)), low_res=low_res,
                              background=BACKGROUNDS[int(order[index % len(order)])], views=views, **look))
    return tuple(cameras)


def camera_of_image(network: tuple[Camera, ...], person_entropy: tuple[int, ...], k: int) -> Camera:
    """The camera of image `k` of a person: each block of len(network) images goes through the cameras in a
    fresh random order (the person's stream), so a person's images come from different cameras."""
    rng = stream(person_entropy, CAMERA_CODE)
    block = None
    for _ in range(k // len(network) + 1):
        block = rng.permutation(len(network))
    return network[int(block[k % len(network)])]


def through_camera(scene: Scene, camera: Camera, rng: np.random.Generator) -> Scene:
    """`scene` as `camera` takes it: its look, background and view bias, with a little per-image jitter."""
    views = list(VIEWS)
    view = views[int(rng.choice(len(views), p=np.asarray(camera.views)))]
    cast = tuple(float(c * j) for c, j in zip(camera.cast, rng.normal(1.0, 0.015, size=3)))
    return replace(scene, camera=camera.index, view=view, cast=cast,
                   brightness=float(camera.brightness * rng.normal(1.0, 0.04)), contrast=camera.contrast,
                   saturation=camera.saturation, low_res=camera.low_res, noise=camera.noise,
                   background=camera.background)
