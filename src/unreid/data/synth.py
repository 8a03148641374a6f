"""The synthetic multi-camera world: the embedded default dataset of unreid.

Real re-ID datasets cannot be shipped, so demos, tests and newcomers use this
generator. It reproduces what makes fully-unsupervised re-ID hard and what the
seed methods fix: every camera has its own scene, light and optics, so a naive
feature groups images by camera before it groups them by person; the person is
the only thing shared across cameras, and ground-truth foreground masks are
written beside the images (the mask-based methods can be run with perfect or
degraded masks).

Output (Market-1501 layout, readable by ``unreid.data.load_dataset``)::

    OUT/bounding_box_train/0001_c2s1_000001_00.jpg   train identities (first half of the pids)
    OUT/query/...                                    one image per (test identity, camera)
    OUT/bounding_box_test/...                        the other test images + pid-0000 distractors
    OUT/masks/<same tree>/<same name>.png            0 = background, 255 = person
    OUT/world.json                                   config, generator version, counts, cameras

File names are ``{pid:04d}_c{cam+1}s1_{frame:06d}_00.jpg`` with pids from 1 and a frame
number unique in the world. JPEG quality 95 and PNG without any metadata or time
stamp, so the same config gives byte-identical files.

The model, with its parameters (all sizes are fractions of the figure height L or of the
image, so they scale with ``height``/``width``):

- **Identity** (RNG ``(seed, IDENTITY, pid)``): skin tone (5 tones), hair colour (6,
  black-heavy) and length (35 % long), hat (10 %); upper garment colour from 15 clothing
  colours with a dark-heavy prior as in street footage, pattern solid 45 % / horizontal
  stripes 15 % / vertical stripes 8 % / open jacket 20 % (a shirt band seen only from the
  front) / chest logo 12 % (front only); short sleeves 40 %; lower garment trousers 65 % /
  shorts 20 % / skirt 15 %; shoes colour; bag none 45 % / backpack 30 % (a block from the
  back and side, only straps from the front) / shoulder bag 25 %; body height 0.80-0.92 of
  the image, build (width) 0.85-1.2, hip height 0.47-0.53 L, head size 0.9-1.1. Every
  colour is jittered by 6 % per channel so that two people in "black" still differ a bit.
- **Camera** (RNG ``(seed, CAMERA, cam)``): a scene kind (facade with windows, tiled
  floor in perspective, street with lane marks, foliage under a sky; consecutive cameras
  get different kinds) in a 3-colour palette around a hue spaced 1/cameras apart; gain
  0.8-1.15, colour cast 1 +- N(0, 0.06) per channel, horizontal light gradient +-20 %,
  Gaussian blur sigma 0-1 px and sensor noise 1.5-6 grey levels (at 128 px height), and a
  viewpoint tendency: one of front/back/side with probability 0.6, the two others 0.2.
- **Image** (RNG ``(seed, IMAGE, pid, index)``): viewpoint from the camera's tendency
  (side views face left or right), walking phase (legs swing +-22 deg from the side,
  arms +-25 deg), scale 0.92-1.04, shift +-8 % of the width and +-4 % of the height,
  rotation +-4 deg, figure brightness +-3 %; the background is the camera's scene with a
  random texture phase, horizon jitter, +-5 % brightness and, with p = 0.6, one clutter
  box (a bench, a sign); with probability ``occluders`` a pole or a low box in front of
  the person (occluder pixels are background in the mask).
- **Layout** (RNG ``(seed, LAYOUT, pid)``): each identity is seen by 2..min(cameras,
  images_per_id) cameras chosen at random (people do not walk past every camera); its
  images are split over them with at least one per camera. Distractors (pid 0) are
  fresh identities (RNG ``(seed, DISTRACTOR, k)``) in random cameras.

Rendering is numpy + PIL: the figure's body parts are polygons drawn as a part-label map
at twice the resolution, coloured through a per-identity lookup table (stripes and
shading computed in body coordinates), then averaged 2 x 2 into a premultiplied colour
and an alpha used to composite over the background; the mask is alpha >= 0.5. Every
image's randomness comes from a ``numpy.random.SeedSequence`` keyed by (seed, pid,
index), never from the order of execution, so a process pool gives the same bytes.

Measured (2 cores): the default world (300 ids x 16 images + 100 distractors at 128x64)
generates in about 8 s; an HSV-histogram baseline scores mAP ~6 % on the raw test split
and ~25 % with the ground-truth masks applied, and the raw nearest neighbour of an image
is a same-camera stranger far more often than the same person (see
tests/test_data_synth.py for the measured property at test size).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from unreid.data.cache import SYNTH, WORLD_JSON, ensure_private_dir, user_cache_root
from unreid.errors import ConfigError, DataError
from unreid.io import atomic_dir

__all__ = [
    "QUICK_CONFIG",
    "SYNTH_VERSION",
    "SynthConfig",
    "config_hash",
    "default_world",
    "generate_world",
    "render_image",
]

# Bump when the renderer changes what a config produces: cached default worlds are
# keyed by it, so users get the new world instead of a stale cache.
SYNTH_VERSION = 1

SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")
MASK_DIR = "masks"


@dataclass(frozen=True)
class SynthConfig:
    """Size and seed of a synthetic world.

    Attributes:
        ids: identities; the first ``ids // 2`` pids are train, the rest test.
        cameras: cameras, 2..9 (the Market-1501 name has one camera digit).
        images_per_id: images of each identity, spread over 2+ of its cameras.
        height, width: image size in pixels (>= 32 x 16).
        seed: world seed (>= 0); the same config gives byte-identical files.
        occluders: share of images with a pole or a box in front of the person, in [0, 1].
        distractors: extra gallery images of pid 0000 (people never in the query).
    """

    ids: int = 300
    cameras: int = 5
    images_per_id: int = 16
    height: int = 128
    width: int = 64
    seed: int = 0
    occluders: float = 0.15
    distractors: int = 100

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field and the fix when a value is unusable."""
        checks = [
            (self.ids >= 2, f"ids={self.ids}: need >= 2 (half train, half test)"),
            (self.ids <= 9999, f"ids={self.ids}: at most 9999 (4-digit pids in file names)"),
            (2 <= self.cameras <= 9, f"cameras={self.cameras}: use 2..9 (one digit in names)"),
            (
                self.images_per_id >= 2,
                f"images_per_id={self.images_per_id}: need >= 2 (two cameras per identity)",
            ),
            (
                self.height >= 32 and self.width >= 16,
                f"size={self.height}x{self.width}: use at least 32x16 pixels",
            ),
            (self.seed >= 0, f"seed={self.seed}: use a non-negative integer"),
            (0.0 <= self.occluders <= 1.0, f"occluders={self.occluders}: a share in [0, 1]"),
            (self.distractors >= 0, f"distractors={self.distractors}: use >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synthetic world: {message}")


# A tiny world for smoke tests and `unreid demo --quick` (340 images, < 1 s).
QUICK_CONFIG = SynthConfig(ids=40, cameras=4, images_per_id=8, height=64, width=32,
                           distractors=20)

# ---------------------------------------------------------------- randomness

# Domain tags keep the streams of cameras, identities, images and layout apart even
# when their keys collide (pid 3 vs camera 3).
_CAMERA, _IDENTITY, _IMAGE, _LAYOUT, _DISTRACTOR, _WORLD = 1, 2, 3, 4, 5, 6


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


# ---------------------------------------------------------------- palettes (RGB 0..255)

# name: (rgb, weight as upper garment, weight as lower garment). Dark clothes dominate
# street footage, which is what makes colour alone ambiguous.
_CLOTHES = {
    "black": ((25, 25, 28), 0.18, 0.22),
    "charcoal": ((70, 70, 75), 0.10, 0.12),
    "grey": ((130, 130, 135), 0.08, 0.08),
    "white": ((225, 225, 220), 0.10, 0.04),
    "navy": ((30, 40, 90), 0.09, 0.12),
    "blue": ((50, 90, 170), 0.08, 0.14),
    "lightblue": ((130, 170, 210), 0.05, 0.05),
    "red": ((170, 30, 35), 0.06, 0.02),
    "green": ((40, 110, 60), 0.05, 0.03),
    "khaki": ((175, 155, 110), 0.06, 0.08),
    "brown": ((100, 65, 40), 0.05, 0.06),
    "yellow": ((220, 190, 50), 0.03, 0.01),
    "pink": ((220, 130, 160), 0.03, 0.01),
    "purple": ((100, 50, 120), 0.02, 0.01),
    "orange": ((225, 120, 40), 0.02, 0.01),
}
_CLOTH_RGB = np.array([v[0] for v in _CLOTHES.values()], dtype=np.float64) / 255.0
_UPPER_P = np.array([v[1] for v in _CLOTHES.values()])
_LOWER_P = np.array([v[2] for v in _CLOTHES.values()])
_UPPER_P, _LOWER_P = _UPPER_P / _UPPER_P.sum(), _LOWER_P / _LOWER_P.sum()

_SKIN = np.array(
    [(241, 194, 167), (224, 172, 135), (198, 134, 96), (141, 85, 56), (90, 56, 38)]
) / 255.0
_HAIR = np.array(
    [(20, 18, 18), (55, 35, 25), (100, 70, 45), (200, 170, 110), (150, 150, 150), (130, 55, 30)]
) / 255.0
_HAIR_P = np.array([0.40, 0.25, 0.15, 0.08, 0.07, 0.05])

# Part labels of the 2x label map; 0 is background.
SKIN, HAIR, UPPER, UPPER2, LOWER, SHOES, BAG, HAT = range(1, 9)
_N_LABELS = 9

FRONT, BACK, SIDE = 0, 1, 2
_VIEWS = ("front", "back", "side")
_SCENES = ("facade", "tiles", "street", "foliage")
_PATTERNS = ("solid", "hstripes", "vstripes", "jacket", "logo")
_LOWER_TYPES = ("trousers", "shorts", "skirt")
_BAGS = ("none", "backpack", "shoulder")


def _jitter(rgb: np.ndarray, rng: np.random.Generator, sd: float = 0.06) -> np.ndarray:
    return np.clip(rgb * (1.0 + rng.normal(0.0, sd, 3)), 0.0, 1.0)


# ---------------------------------------------------------------- cameras


@dataclass(frozen=True)
class _Camera:
    index: int
    scene: str
    palette: np.ndarray  # (3, 3) RGB in [0, 1]
    period: float  # texture period, fraction of the image height
    horizon: float  # fraction of the image height
    waves: np.ndarray  # (4, 2) spatial frequencies of the foliage scene
    gain: float
    cast: np.ndarray  # (3,) per-channel multiplier
    grain: float  # std of the background's blotchy brightness texture
    light: float  # horizontal illumination gradient across the image
    blur: float  # Gaussian sigma in pixels at 128 px height
    noise: float  # sensor noise std in grey levels
    views: np.ndarray  # (3,) probabilities of front/back/side


def _make_camera(seed: int, cam: int, cameras: int) -> _Camera:
    world = _rng(seed, _WORLD)
    scene_offset, hue0 = int(world.integers(len(_SCENES))), float(world.random())
    view_offset = int(world.integers(3))
    rng = _rng(seed, _CAMERA, cam)
    # Hues spaced 1/cameras apart so that no two cameras share a palette by chance.
    hue = (hue0 + cam / cameras + rng.normal(0.0, 0.03)) % 1.0
    palette = np.array(
        [
            colorsys.hsv_to_rgb(
                (hue + rng.normal(0.0, 0.06)) % 1.0, rng.uniform(0.05, 0.35), rng.uniform(*v)
            )
            for v in ((0.45, 0.85), (0.30, 0.70), (0.20, 0.80))
        ]
    )
    scene = _SCENES[(scene_offset + cam) % len(_SCENES)]
    horizon = {"facade": 0.78, "tiles": 0.38, "street": 0.55, "foliage": 0.25}[scene]
    views = np.full(3, 0.2)
    views[(view_offset + cam) % 3] = 0.6
    return _Camera(
        index=cam,
        scene=scene,
        palette=palette,
        period=float(rng.uniform(0.22, 0.40)),
        horizon=horizon + float(rng.normal(0.0, 0.04)),
        waves=rng.uniform(1.0, 4.0, (4, 2)) * rng.choice([-1.0, 1.0], (4, 2)),
        gain=float(rng.uniform(0.8, 1.15)),
        cast=np.clip(1.0 + rng.normal(0.0, 0.06, 3), 0.85, 1.15),
        grain=float(rng.uniform(0.04, 0.12)),
        light=float(rng.uniform(-0.2, 0.2)),
        blur=float(rng.uniform(0.0, 1.0)),
        noise=float(rng.uniform(1.5, 6.0)),
        views=views,
    )


def _background(cam: _Camera, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float RGB in [0, 1]: the camera's scene at a random phase and clutter."""
    yn = ((np.arange(h) + 0.5) / h)[:, None]
    xn = ((np.arange(w) + 0.5) / h)[None, :]  # both axes in image-height units
    ox, oy = rng.random(2)
    horizon = cam.horizon + rng.normal(0.0, 0.03)
    # the same place looks a bit different in every frame (sun, shadows, wet ground)
    p0, p1, p2 = np.clip(cam.palette * rng.uniform(0.85, 1.15, (3, 1))
                         * (1.0 + rng.normal(0.0, 0.04, (3, 3))), 0.0, 1.0)
    p = cam.period
    if cam.scene == "facade":
        col = np.floor(xn / p + ox) % 2
        wall = np.where(col[..., None] > 0, p0, p0 * 0.85)
        fx, fy = (xn / p + ox) % 1.0, (yn / (1.2 * p) + oy) % 1.0
        window = (np.abs(fx - 0.5) < 0.25) & (np.abs(fy - 0.5) < 0.3)
        img = np.where(window[..., None], p1, wall)
        ground = p2 * (0.8 + 0.4 * (yn - horizon))[..., None]
        img = np.where((yn > horizon)[..., None], ground, img)
    elif cam.scene == "tiles":
        depth = np.maximum(yn - horizon, 0.0) + 0.05
        u, v = (xn - 0.25) / depth * 0.15 + ox, 0.15 / depth + oy
        checker = ((np.floor(u / p) + np.floor(v / p)) % 2)[..., None]
        floor = np.where(checker > 0, p1, 0.7 * p1 + 0.3 * p2)
        wall = p0 * (0.75 + 0.4 * yn)[..., None]
        img = np.where((yn > horizon)[..., None], floor, wall)
    elif cam.scene == "street":
        wall = p0 * (0.7 + 0.5 * yn)[..., None]
        lane = ((xn + 0.6 * yn) / p + ox) % 1.0 < 0.15
        road = np.where(lane[..., None], p2, p1)
        img = np.where((yn > horizon)[..., None], road, wall)
    else:  # foliage under a sky
        phases = rng.uniform(0.0, 2 * np.pi, 4)
        n = sum(
            np.sin(2 * np.pi * (fx * xn + fy * yn) + ph)
            for (fx, fy), ph in zip(cam.waves, phases)
        )
        t = (1.0 / (1.0 + np.exp(-1.5 * n)))[..., None]
        leaves = t * p0 + (1 - t) * p1
        img = np.where((yn < horizon)[..., None], p2 * (1.1 - 0.4 * yn)[..., None], leaves)
    # surface grain (dirt, bricks, leaves) at 1/4 resolution: real backgrounds are not flat
    coarse = rng.standard_normal((-(-h // 4), -(-w // 4))).astype(np.float32)
    grain = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BILINEAR))
    img = img * (1.0 + cam.grain * grain)[..., None]
    # clutter: benches, signs, cars, passers-by; half of it in the scene's colours,
    # half in clothing colours (people and things that are not the camera's own)
    for _ in range(rng.poisson(1.2)):
        bw, bh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.4) * h
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(0.1, 0.85) * h
        if rng.random() < 0.5:
            colour = cam.palette[rng.integers(3)] * rng.uniform(0.5, 1.2)
        else:
            colour = _CLOTH_RGB[rng.integers(len(_CLOTH_RGB))]
        img[int(max(y0, 0)) : int(y0 + bh), int(max(x0, 0)) : int(x0 + bw)] = np.clip(colour, 0, 1)
    return (img * rng.uniform(0.95, 1.05)).astype(np.float32)


# ---------------------------------------------------------------- identities


@dataclass(frozen=True)
class _Identity:
    lut: np.ndarray  # (_N_LABELS, 3) RGB per part label
    pattern: str
    stripe: float  # stripe period, fraction of L
    short_sleeves: bool
    lower: str
    bag: str
    bag_side: float  # +1 / -1: which hip the shoulder bag hangs on
    long_hair: bool
    hat: bool
    height: float  # figure height, fraction of the image height
    build: float
    hip: float
    head: float


def _make_identity(rng: np.random.Generator) -> _Identity:
    upper_i = rng.choice(len(_CLOTH_RGB), p=_UPPER_P)
    # the second upper colour (stripes, inner shirt, logo) contrasts with the first
    others = np.delete(np.arange(len(_CLOTH_RGB)), upper_i)
    upper2_i = rng.choice(others)
    lut = np.zeros((_N_LABELS, 3))
    lut[SKIN] = _jitter(_SKIN[rng.integers(len(_SKIN))], rng)
    lut[HAIR] = _jitter(_HAIR[rng.choice(len(_HAIR), p=_HAIR_P)], rng)
    lut[UPPER] = _jitter(_CLOTH_RGB[upper_i], rng)
    lut[UPPER2] = _jitter(_CLOTH_RGB[upper2_i], rng)
    lut[LOWER] = _jitter(_CLOTH_RGB[rng.choice(len(_CLOTH_RGB), p=_LOWER_P)], rng)
    lut[SHOES] = _jitter(_CLOTH_RGB[rng.choice([0, 1, 3, 10, 2])], rng)
    lut[BAG] = _jitter(_CLOTH_RGB[rng.integers(len(_CLOTH_RGB))], rng)
    lut[HAT] = _jitter(_CLOTH_RGB[rng.integers(len(_CLOTH_RGB))], rng)
    return _Identity(
        lut=lut.astype(np.float32),
        pattern=str(rng.choice(_PATTERNS, p=[0.45, 0.15, 0.08, 0.20, 0.12])),
        stripe=float(rng.uniform(0.035, 0.06)),
        short_sleeves=bool(rng.random() < 0.4),
        lower=str(rng.choice(_LOWER_TYPES, p=[0.65, 0.20, 0.15])),
        bag=str(rng.choice(_BAGS, p=[0.45, 0.30, 0.25])),
        bag_side=float(rng.choice([-1.0, 1.0])),
        long_hair=bool(rng.random() < 0.35),
        hat=bool(rng.random() < 0.10),
        height=float(rng.uniform(0.84, 0.94)),
        build=float(rng.uniform(0.85, 1.2)),
        hip=float(rng.uniform(0.47, 0.53)),
        head=float(rng.uniform(0.9, 1.1)),
    )


# ---------------------------------------------------------------- figure geometry
# Body coordinates: units of the figure height L, origin between the feet, y down (the
# head is near y = -0.92), facing the camera (front) or facing +x (side).

Shape = tuple[int, np.ndarray]  # (part label, (n, 2) polygon)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _limb(
    x: float, y: float, angle: float, length: float, w0: float, w1: float
) -> tuple[np.ndarray, np.ndarray]:
    """A tapered limb from joint (x, y) pointing ``angle`` radians from straight down.

    Returns the (4, 2) polygon and the end point (2,)."""
    d = np.array([np.sin(angle), np.cos(angle)])
    n = np.array([d[1], -d[0]])
    p0 = np.array([x, y])
    p1 = p0 + length * d
    poly = np.stack([p0 + n * w0 / 2, p1 + n * w1 / 2, p1 - n * w1 / 2, p0 - n * w0 / 2])
    return poly, p1


def _figure(ident: _Identity, view: int, phase: float) -> list[Shape]:
    """Body-part polygons of one pose, in drawing order (later shapes cover earlier ones)."""
    b, hip_y, side = ident.build, -ident.hip, view == SIDE
    sh_y, head_y = -0.82, -0.915
    hx, hy = 0.06 * ident.head, 0.074 * ident.head
    sw = 0.145 * b * (0.55 if side else 1.0)  # half width at the shoulders
    ww = 0.12 * b * (0.6 if side else 1.0)  # half width at the waist
    swing = np.sin(phase)
    bag_side = ident.bag_side * (-1.0 if view == BACK else 1.0)  # mirrored from behind

    def leg(x: float, angle: float) -> list[Shape]:
        w0, w1 = 0.1 * b, 0.07 * b
        poly, foot = _limb(x, hip_y, angle, ident.hip, w0, w1)
        out: list[Shape] = [(LOWER if ident.lower == "trousers" else SKIN, poly)]
        if ident.lower == "shorts":
            out.append((LOWER, _limb(x, hip_y, angle, 0.45 * ident.hip, w0, 0.07 * b)[0]))
        toe = 0.02 if side else 0.0
        out.append((SHOES, _ellipse(foot[0] + toe, foot[1] - 0.01, 0.055 if side else 0.04,
                                    0.022)))
        return out

    def arm(x: float, angle: float) -> list[Shape]:
        w = 0.065 * (0.9 + 0.1 * b)
        poly, hand = _limb(x, sh_y + 0.02, angle, 0.35, w, 0.8 * w)
        if ident.short_sleeves:
            out: list[Shape] = [(SKIN, poly), (UPPER, _limb(x, sh_y + 0.02, angle, 0.14, w,
                                                              0.9 * w)[0])]
        else:
            out = [(UPPER, poly)]
        return [*out, (SKIN, _ellipse(hand[0], hand[1], 0.025, 0.028, 10))]

    if side:
        a_leg, a_arm = np.deg2rad(22) * swing, -np.deg2rad(25) * swing
        far_arm, near_arm = arm(0.0, -a_arm), arm(0.0, a_arm)
        legs = leg(0.0, -a_leg) + leg(0.0, a_leg)
    else:
        spread, sway = 0.03, 0.02 * swing
        far_arm = []
        near_arm = arm(-(sw - 0.02), -(0.10 + 0.04 * swing)) + arm(sw - 0.02,
                                                                    0.10 - 0.04 * swing)
        legs = leg(-0.06 * b, -(spread + sway)) + leg(0.06 * b, spread - sway)

    pelvis: list[Shape] = [(LOWER, _rect(-ww, hip_y - 0.04, ww, hip_y + 0.06))]
    if ident.lower == "skirt":
        skirt = np.array([[-ww, hip_y - 0.04], [ww, hip_y - 0.04],
                          [1.6 * ww, hip_y + 0.45 * ident.hip],
                          [-1.6 * ww, hip_y + 0.45 * ident.hip]])
        pelvis.append((LOWER, skirt))
    torso: list[Shape] = [
        (UPPER, np.array([[-sw, sh_y], [sw, sh_y], [ww, hip_y + 0.02], [-ww, hip_y + 0.02]])),
        (UPPER, _ellipse(0.0, sh_y + 0.02, sw, 0.035)),  # rounded shoulders
    ]
    if view == FRONT and ident.pattern == "jacket":  # the open jacket shows the shirt
        torso.append((UPPER2, np.array([[-0.3 * sw, sh_y + 0.005], [0.3 * sw, sh_y + 0.005],
                                         [0.3 * ww, hip_y + 0.02], [-0.3 * ww, hip_y + 0.02]])))
    if view == FRONT and ident.pattern == "logo":
        torso.append((UPPER2, _rect(-0.045, -0.74, 0.045, -0.67)))

    bag: list[Shape] = []
    if ident.bag == "backpack":
        if view == FRONT:  # only the straps
            bag = [(BAG, _limb(s * 0.55 * sw, sh_y, 0.0, 0.16, 0.022, 0.022)[0])
                   for s in (-1.0, 1.0)]
        elif view == BACK:
            bag = [(BAG, _rect(-0.8 * sw, sh_y + 0.03, 0.8 * sw, hip_y - 0.03))]
        else:
            bag = [(BAG, _rect(-sw - 0.08, sh_y + 0.03, -sw + 0.01, hip_y - 0.02))]
    elif ident.bag == "shoulder":
        bx = 0.0 if side else bag_side * (ww + 0.045)
        strap = np.array([[-bag_side * 0.6 * sw, sh_y], [-bag_side * 0.6 * sw + 0.02, sh_y],
                          [bx + 0.01, hip_y - 0.05], [bx - 0.01, hip_y - 0.05]])
        bag = [(BAG, strap), (BAG, _rect(bx - 0.045, hip_y - 0.055, bx + 0.045, hip_y + 0.055))]

    neck: list[Shape] = [(SKIN, _rect(-0.025, -0.87, 0.025, sh_y + 0.01))]
    if view == FRONT:
        head = [(HAIR, _ellipse(0.0, head_y - 0.008, 1.08 * hx, 1.04 * hy)),
                (SKIN, _ellipse(0.0, head_y + 0.012, 0.9 * hx, 0.85 * hy))]
    elif view == BACK:  # no face from behind
        head = [(HAIR, _ellipse(0.0, head_y, 1.06 * hx, 1.02 * hy))]
    else:
        head = [(SKIN, _ellipse(0.008, head_y, 1.02 * hx, hy)),
                (HAIR, _ellipse(-0.012, head_y - 0.01, 0.95 * hx, 0.95 * hy))]
    long_hair: list[Shape] = []
    if ident.long_hair:
        x0, x1 = (-1.1 * hx, 0.0) if side else (-1.08 * hx, 1.08 * hx)
        long_hair = [(HAIR, _rect(x0, head_y, x1, sh_y + (0.05 if view == FRONT else 0.09)))]
    hat: list[Shape] = []
    if ident.hat:
        hat = [(HAT, _ellipse(0.0, head_y - 0.55 * hy, 1.15 * hx, 0.55 * hy))]

    if view == FRONT:
        order = [long_hair, legs, pelvis, torso, near_arm, bag, neck, head, hat]
    elif view == BACK:
        order = [legs, pelvis, torso, near_arm, bag, neck, head, long_hair, hat]
    else:
        order = [far_arm, legs, pelvis, bag, torso, near_arm, neck, head, long_hair, hat]
    return [shape for group in order for shape in group]


# ---------------------------------------------------------------- rendering


def render_image(
    cfg: SynthConfig, cam: int, ident_rng: np.random.Generator, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image of the identity drawn from ``ident_rng`` in camera ``cam``.

    A pure function of its arguments (exposed for tests and viz); :func:`generate_world`
    derives ``ident_rng`` from (seed, pid) and ``rng`` from (seed, pid, index).

    Returns:
        image: (height, width, 3) uint8 RGB.
        mask: (height, width) bool, True = person (occluder pixels are False).
    """
    return _render(_make_camera(cfg.seed, cam, cfg.cameras), _make_identity(ident_rng), cfg,
                   rng)


def _render(
    camera: _Camera, ident: _Identity, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    h, w = cfg.height, cfg.width
    h2, w2 = 2 * h, 2 * w  # supersampled canvas: 2x2 averaging anti-aliases the edges
    view = int(rng.choice(3, p=camera.views))
    facing = float(rng.choice([-1.0, 1.0]))
    phase = float(rng.uniform(0.0, 2 * np.pi))
    size = ident.height * rng.uniform(0.92, 1.04) * h2  # L in canvas pixels
    cx = w2 * (0.5 + rng.uniform(-0.08, 0.08))
    # feet y so that the figure (0.99 L from the soles to the top of the head) is centred
    fy = 0.5 * h2 + 0.495 * size + rng.uniform(-0.04, 0.04) * h2
    theta = np.deg2rad(rng.uniform(-4.0, 4.0))
    shade_scale = rng.uniform(0.97, 1.03)

    # body -> canvas: similarity transform; side views facing -x are mirrored
    cos, sin = np.cos(theta), np.sin(theta)
    mirror = facing if view == SIDE else 1.0
    label_img = Image.new("L", (w2, h2), 0)
    draw = ImageDraw.Draw(label_img)
    for label, poly in _figure(ident, view, phase):
        u, v = poly[:, 0] * mirror, poly[:, 1]
        xs = cx + size * (cos * u - sin * v)
        ys = fy + size * (sin * u + cos * v)
        draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=label)
    labels = np.asarray(label_img)

    # colour the figure's pixels by part; stripes and cylinder shading use each pixel's
    # body coordinates (only figure pixels are touched: most of the canvas is background)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    py, px = np.divmod(idx, w2)
    du, dv = px + (0.5 - cx), py + (0.5 - fy)
    bu = (cos * du + sin * dv) * (mirror / size)
    colour = ident.lut[flat[idx]]  # (n, 3) float32
    if ident.pattern in ("hstripes", "vstripes"):
        coord = (-sin * du + cos * dv) / size if ident.pattern == "hstripes" else bu
        stripe = (flat[idx] == UPPER) & (np.floor(coord / ident.stripe) % 2 == 0)
        colour[stripe] = ident.lut[UPPER2]
    side_light = camera.light * mirror  # light comes from one side of the image
    r = bu / 0.16
    shade = shade_scale * (1.0 - 0.3 * np.minimum(np.abs(r), 1.0) ** 2 + 0.5 * side_light * r)
    canvas: np.ndarray = np.zeros((h2 * w2, 3), dtype=np.float32)
    canvas[idx] = colour * shade[:, None].astype(np.float32)
    canvas = canvas.reshape(h2, w2, 3)
    cover = (labels > 0).astype(np.float32)
    # 2x2 box average; label 0 is black, so ``fg`` is colour premultiplied by coverage
    fg = 0.25 * (canvas[0::2, 0::2] + canvas[1::2, 0::2] + canvas[0::2, 1::2] + canvas[1::2, 1::2])
    alpha = 0.25 * (cover[0::2, 0::2] + cover[1::2, 0::2] + cover[0::2, 1::2] + cover[1::2, 1::2])

    img = fg + (1.0 - alpha)[..., None] * _background(camera, h, w, rng)
    mask = alpha >= 0.5

    if rng.random() < cfg.occluders:
        occ = np.zeros((h, w), dtype=bool)
        grey = rng.uniform(0.2, 0.7)
        occ_colour = np.clip(grey * (1 + rng.normal(0, 0.1, 3)), 0, 1)
        if rng.random() < 0.5:  # a pole across the person
            pw = max(2, round(rng.uniform(0.08, 0.16) * w))
            x0 = int(rng.integers(round(0.2 * w), round(0.8 * w) - pw + 1))
            occ[:, x0 : x0 + pw] = True
        else:  # a box, a bin, a railing in front of the legs
            top = round(rng.uniform(0.6, 0.8) * h)
            x0 = round(rng.uniform(-0.3, 0.5) * w)
            x1 = x0 + round(rng.uniform(0.5, 1.0) * w)
            occ[top:, max(x0, 0) : max(x1, 0)] = True
        img[occ] = occ_colour
        mask &= ~occ

    # camera: gain, colour cast and a light gradient, then optics (blur) and sensor noise
    xs = (np.arange(w) + 0.5) / w - 0.5
    illum = camera.gain * (1.0 + camera.light * xs)[None, :, None] * camera.cast
    img = np.clip(img * illum, 0.0, 1.0)
    out = Image.fromarray(np.rint(img * 255).astype(np.uint8), "RGB")
    sigma = camera.blur * h / 128
    if sigma > 0.2:
        out = out.filter(ImageFilter.GaussianBlur(sigma))
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(camera.noise)
    noisy = np.asarray(out, dtype=np.float32) + noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mask


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Job:
    folder: str  # one of SPLIT_DIRS
    pid: int  # 0 = distractor
    cam: int  # 0-based
    index: int  # image index within its identity (distractors: distractor number)
    frame: int  # unique frame number in the file name

    @property
    def name(self) -> str:
        return f"{self.pid:04d}_c{self.cam + 1}s1_{self.frame:06d}_00.jpg"


def _layout(cfg: SynthConfig) -> list[_Job]:
    """Every image of the world: split folder, pid, camera, RNG index and frame number."""
    n_train = cfg.ids // 2
    jobs: list[_Job] = []
    frame = 0
    for pid in range(1, cfg.ids + 1):
        rng = _rng(cfg.seed, _LAYOUT, pid)
        n_cams = int(rng.integers(2, min(cfg.cameras, cfg.images_per_id) + 1))
        cams = np.sort(rng.choice(cfg.cameras, size=n_cams, replace=False))
        counts = 1 + rng.multinomial(cfg.images_per_id - n_cams, np.full(n_cams, 1 / n_cams))
        per_image = np.repeat(cams, counts)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # query: first image per camera
        for index, cam in enumerate(per_image.tolist()):
            frame += 1
            if pid <= n_train:
                folder = "bounding_box_train"
            else:
                folder = "query" if index in first else "bounding_box_test"
            jobs.append(_Job(folder, pid, cam, index, frame))
    cam_rng = _rng(cfg.seed, _LAYOUT, 0)
    for k, cam in enumerate(cam_rng.integers(cfg.cameras, size=cfg.distractors).tolist()):
        frame += 1
        jobs.append(_Job("bounding_box_test", 0, cam, k, frame))
    return jobs


def _render_jobs(cfg: SynthConfig, root: str, jobs: Sequence[_Job]) -> int:
    """Render and write the images and masks of ``jobs`` under ``root``; returns the count.

    Module-level (picklable) so a process pool can run it; its output depends only on
    the jobs, not on which process runs them or in which order."""
    cameras = [_make_camera(cfg.seed, c, cfg.cameras) for c in range(cfg.cameras)]
    identities: dict[int, _Identity] = {}
    for job in jobs:
        if job.pid == 0:
            ident = _make_identity(_rng(cfg.seed, _DISTRACTOR, job.index))
            rng = _rng(cfg.seed, _DISTRACTOR, job.index, 1)
        else:
            if job.pid not in identities:
                identities[job.pid] = _make_identity(_rng(cfg.seed, _IDENTITY, job.pid))
            ident = identities[job.pid]
            rng = _rng(cfg.seed, _IMAGE, job.pid, job.index)
        image, mask = _render(cameras[job.cam], ident, cfg, rng)
        Image.fromarray(image, "RGB").save(
            os.path.join(root, job.folder, job.name), "JPEG", quality=95
        )
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(
            os.path.join(root, MASK_DIR, job.folder, job.name[:-4] + ".png"), "PNG"
        )
    return len(jobs)


def _chunks(jobs: Sequence[_Job], n: int) -> Iterable[Sequence[_Job]]:
    step = max(1, -(-len(jobs) // n))
    return (jobs[i : i + step] for i in range(0, len(jobs), step))


# ---------------------------------------------------------------- public API


def config_hash(cfg: SynthConfig) -> str:
    """16 hex digits identifying the world a config produces (generator version included)."""
    text = json.dumps({"version": SYNTH_VERSION, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _world_info(cfg: SynthConfig, jobs: Sequence[_Job]) -> dict:
    splits = {}
    for folder in SPLIT_DIRS:
        sel = [j for j in jobs if j.folder == folder]
        splits[folder] = {"images": len(sel), "identities": len({j.pid for j in sel if j.pid})}
    cams = [_make_camera(cfg.seed, c, cfg.cameras) for c in range(cfg.cameras)]
    return {
        "generator": "unreid.data.synth",
        "version": SYNTH_VERSION,
        "config": asdict(cfg),
        "hash": config_hash(cfg),
        "splits": splits,
        "distractors": cfg.distractors,
        "cameras": [
            {
                "camid": c.index,
                "scene": c.scene,
                "view_preference": dict(zip(_VIEWS, np.round(c.views, 3).tolist())),
                "gain": round(c.gain, 4),
                "cast": np.round(c.cast, 4).tolist(),
                "blur_sigma_px": round(c.blur * cfg.height / 128, 4),
                "noise_std": round(c.noise, 4),
            }
            for c in cams
        ],
    }


def _default_workers(n_images: int) -> int:
    # Starting a worker costs ~0.5 s (spawn + imports): only worth it for big worlds.
    return 1 if n_images < 1500 else max(1, min(2, os.cpu_count() or 1))


def generate_world(
    cfg: SynthConfig,
    out_dir: str | Path,
    progress: bool = True,
    *,
    workers: int | None = None,
) -> Path:
    """Generate the world of ``cfg`` into ``out_dir`` (Market-1501 layout + masks/ + world.json).

    The world is built in a temporary sibling folder (mode 0700) and moved into place
    (:func:`unreid.io.atomic_dir`), so ``out_dir`` never holds half a world. An existing
    ``out_dir`` must be empty or a previous synthetic world holding only the files unreid
    wrote there (it is replaced); anything a user added is refused, never deleted.

    Args:
        cfg: sizes and seed.
        out_dir: destination folder.
        progress: show a progress bar.
        workers: processes rendering in parallel (None: 2 for big worlds, else 1); the
            files are byte-identical whatever the number.

    Returns:
        ``out_dir`` as an absolute Path.
    """
    cfg.validate()
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / WORLD_JSON).is_file())):
        raise ConfigError(
            f"--out {out} exists and is not a synthetic world (no {WORLD_JSON}): "
            "choose a new or empty folder"
        )
    if (out / WORLD_JSON).is_file() and (foreign := _foreign_entry(out)) is not None:
        raise ConfigError(
            f"--out {out} holds {foreign}, which unreid did not write there and replacing "
            "the world would delete: move it out, or choose a new or empty folder"
        )
    jobs = _layout(cfg)
    with atomic_dir(out) as tmp:
        for folder in SPLIT_DIRS:
            (tmp / folder).mkdir()
            (tmp / MASK_DIR / folder).mkdir(parents=True)
        _run_jobs(cfg, tmp, jobs, progress, workers or _default_workers(len(jobs)))
        text = json.dumps(_world_info(cfg, jobs), indent=2, sort_keys=True) + "\n"
        (tmp / WORLD_JSON).write_text(text)
    return out


def _world_entries(cfg: SynthConfig) -> set[str]:
    """Relative paths of every folder and file :func:`generate_world` writes for ``cfg``."""
    entries = {WORLD_JSON, MASK_DIR, *SPLIT_DIRS, *(f"{MASK_DIR}/{f}" for f in SPLIT_DIRS)}
    for job in _layout(cfg):
        entries.add(f"{job.folder}/{job.name}")
        entries.add(f"{MASK_DIR}/{job.folder}/{job.name[:-4]}.png")
    return entries


def _foreign_entry(world: Path) -> str | None:
    """The first path under ``world`` that its ``world.json`` does not account for
    (``world.json`` itself when it cannot be read), else None."""
    try:
        info = json.loads((world / WORLD_JSON).read_text())
        expected = _world_entries(SynthConfig(**info["config"]))
    except (OSError, ValueError, TypeError, KeyError):
        return WORLD_JSON
    for folder, dirs, files in os.walk(world):
        rel = Path(folder).relative_to(world)
        for name in sorted(dirs) + sorted(files):
            if (rel / name).as_posix() not in expected:
                return str(rel / name)
    return None


def _run_jobs(
    cfg: SynthConfig, root: Path, jobs: list[_Job], progress: bool, workers: int
) -> None:
    with tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for chunk in _chunks(jobs, max(1, len(jobs) // 200)):
                bar.update(_render_jobs(cfg, str(root), chunk))
            return
        # spawn: safe even when the parent has started threads (torch, tqdm)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_render_jobs, cfg, str(root), chunk)
                       for chunk in _chunks(jobs, 8 * workers)]
            for fut in as_completed(futures):
                bar.update(fut.result())


def default_world(quick: bool = False, cache_root: str | Path | None = None) -> Path:
    """The default world (or the tiny :data:`QUICK_CONFIG` one), generated once.

    Cached under ``cache_root/<config_hash>`` (default: ``synth/`` in the per-user
    cache, :func:`unreid.data.cache.user_cache_root`); a finished world (its ``world.json`` is
    written last) is returned as is. Concurrent callers each build a private copy and
    the first to finish wins, so a half-written world is never visible.
    """
    cfg = QUICK_CONFIG if quick else SynthConfig()
    if cache_root is None:
        cache_root = ensure_private_dir(
            user_cache_root() / SYNTH, fix="set UNREID_CACHE to a writable folder")
    target = Path(cache_root).absolute() / config_hash(cfg)
    if (target / WORLD_JSON).is_file():
        return target
    with atomic_dir(target, replace=False) as tmp:  # a concurrent winner is kept
        generate_world(cfg, tmp, progress=True)
    if not (target / WORLD_JSON).is_file():
        raise DataError(
            f"{target} holds no finished synthetic world (no {WORLD_JSON}): delete that "
            "folder and run again"
        )
    return target
