"""The shapes world: procedural scenes with exact ground truth, rendered with Pillow.

A scene is 1 to 4 coloured shapes on a small canvas. Everything about it follows
from its seed, so every claim a model makes about a scene can be checked exactly.
Built-in language priors (PRIOR_PAIRS below) make a trained model hallucinate for
the same reason real LVLMs do: captions name some objects together so often (even
when the partner is not in the picture, see core.shapes.texts.caption_sentences)
that the model names the partner from habit. The text's expectation is wrong about
the images: captions name the partner after its anchor far more often than the
scenes hold it (0.2), as text corpora overstate plausible co-occurrences.

Sample scenes with their ground truth and descriptions: python -m core.shapes.sample (core.shapes.sample).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 96
MAX_OBJECTS = 4  # a scene holds 1 to MAX_OBJECTS objects
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond")
COLORS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 195, 20),
    "purple": (135, 55, 185),
    "orange": (240, 125, 25),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
RADIUS = {"small": 9, "large": 15}


@dataclass(frozen=True)
class PriorPair:
    """Two objects that co-occur strongly in training scenes and are always mentioned in this order."""

    anchor: tuple[str, str]  # (colour, shape)
    partner: tuple[str, str]
    rate: float  # P(partner present | anchor present) in the scenes


# The built-in language priors (tabulated in docs/shapes-world.md). Like "fork" after "knife" in
# COCO captions: the partner is always described right after its anchor. The scenes hold it 20% of
# the time, while the text corpus names it after its anchor most of the time (its habit), so the
# text prior is wrong about the images: the world a judge's prior must be debiased in. (Models up
# to v3b lived in a world with rate 0.8, where the prior was right: `--partner-rate 0.8`.)
PARTNER_RATE = 0.2
PRIOR_PAIRS = (
    PriorPair(anchor=("yellow", "star"), partner=("blue", "heart"), rate=PARTNER_RATE),
    PriorPair(anchor=("red", "square"), partner=("green", "triangle"), rate=PARTNER_RATE),
    PriorPair(anchor=("purple", "cross"), partner=("orange", "circle"), rate=PARTNER_RATE),
)
ANCHOR_RATE = 0.45  # P(a scene contains at least one anchor)
# How often an object is rendered hard to see (its own size aside).
LOW_CONTRAST_RATE = {"partner": 0.3, "other": 0.12}
# Half of all present partners are faint (barely above the background and the noise): the
# hardest objects to see. (They were meant to make a model guess partners; the embedded model
# turned out to see most of them, so the guessing comes from the training captions instead:
# core.shapes.texts.PRIOR_MENTION_RATE.) The embedded model first learns to see on scenes without them.
FAINT_PARTNER_RATE = 0.5
FAINT_VISIBILITY = 0.06  # a faint object's colour is 6% its own, 94% the background
DIM_VISIBILITY = 0.2  # a dim object (make_scene's dim_rate) is visible, but its colour and shape are in doubt
SMALL_RATE = {"partner": 0.6, "other": 0.5}


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene, with its ground truth."""

    shape: str
    color: str
    size: str
    position: str
    x: int
    y: int
    low_contrast: bool = False
    faint: bool = False
    dim: bool = False  # weak evidence of any kind of object (make_scene's dim_rate; an ablation)

    @property
    def name(self) -> tuple[str, str]:
        """The object's identity as the parser and CHAIR see it: (colour, shape)."""
        return (self.color, self.shape)


@dataclass(frozen=True)
class Scene:
    """A whole scene: its seed, its objects and how it is rendered."""

    seed: int
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    noise: float
    rotation: tuple[float, ...] = field(default=())

    def names(self) -> set[tuple[str, str]]:
        """The set of (colour, shape) present in the scene."""
        return {o.name for o in self.objects}

    def shares_a_colour(self) -> bool:
        """True if two of the scene's objects have the same colour."""
        return len({o.color for o in self.objects}) < len(self.objects)

    def to_json(self) -> dict:
        """Ground truth as plain JSON data."""
        return {"seed": self.seed, "objects": [
            {"shape": o.shape, "color": o.color, "size": o.size, "position": o.position,
             "x": o.x, "y": o.y, "low_contrast": o.low_contrast, "faint": o.faint} | ({"dim": True} if o.dim else {})
            for o in self.objects]}


def position_of(x: float, y: float, canvas: int = CANVAS) -> str:
    """Position word derived from coordinates: centre, or the dominant direction from the centre."""
    dx, dy = x - canvas / 2, y - canvas / 2
    if max(abs(dx), abs(dy)) < canvas / 6:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def partner_of(name: tuple[str, str]) -> tuple[str, str] | None:
    """The co-occurrence partner of an anchor object, if it is one."""
    for pair in PRIOR_PAIRS:
        if pair.anchor == name:
            return pair.partner
    return None


def _pair_rate(anchor: tuple[str, str]) -> float:
    return next(pair.rate for pair in PRIOR_PAIRS if pair.anchor == anchor)


def _is_partner(name: tuple[str, str]) -> bool:
    return any(p.partner == name for p in PRIOR_PAIRS)


def _pick_names(rng: random.Random, n_objects: int, partner_rate: float | None = None) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    if rng.random() < ANCHOR_RATE:
        pair = rng.choice(PRIOR_PAIRS)
        names.append(pair.anchor)
        if n_objects >= 2 and rng.random() < (pair.rate if partner_rate is None else partner_rate):
            names.append(pair.partner)
    while len(names) < n_objects:
        candidate = (rng.choice(list(COLORS)), rng.choice(SHAPES))
        # An anchor drawn at random follows the same co-occurrence rule.
        if candidate in names:
            continue
        names.append(candidate)
        partner = partner_of(candidate)
        if (partner and partner not in names and len(names) < n_objects
                and rng.random() < (_pair_rate(candidate) if partner_rate is None else partner_rate)):
            names.append(partner)
    return names[:n_objects]


def _place(rng: random.Random, radii: list[int], canvas: int) -> list[tuple[int, int]]:
    for _attempt in range(200):
        allow_overlap = rng.random() < 0.15
        centres: list[tuple[int, int]] = []
        for r in radii:
            for _ in range(60):
                x, y = rng.randint(r + 2, canvas - r - 3), rng.randint(r + 2, canvas - r - 3)
                ok = True
                for (cx, cy), cr in zip(centres, radii):
                    gap = (cr + r) * (0.7 if allow_overlap else 1.0) + (0 if allow_overlap else 3)
                    if math.hypot(cx - x, cy - y) < gap:
                        ok = False
                        break
                if ok:
                    centres.append((x, y))
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres
    raise RuntimeError("could not place objects")  # unreachable for <= 4 objects on 96 px


@dataclass(frozen=True)
class WorldOptions:
    """Options that change the world itself (defaults: the shapes world since v6)."""

    partner_rate: float | None = None  # P(partner present | anchor present); None: each pair's PARTNER_RATE
    dim_rate: float = 0.0  # share of objects of every kind drawn dim

    def scene(self, seed: int) -> "Scene":
        """The scene for a seed in this world."""
        return make_scene(seed, partner_rate=self.partner_rate, dim_rate=self.dim_rate)

    @staticmethod
    def add_arguments(parser) -> None:
        """The --partner-rate and --dim-rate flags, for the CLIs that draw scenes."""
        parser.add_argument("--partner-rate", type=float, default=None,
                            help=f"P(partner present | anchor present) in the scenes (default: the world's "
                                 f"{PARTNER_RATE}; 0.8 is the world of models up to v3b, where the captions' "
                                 f"expectation was right)")
        parser.add_argument("--dim-rate", type=float, default=0.0,
                            help="share of objects of every kind drawn dim in the scenes (an ablation)")

    @classmethod
    def from_args(cls, args) -> "WorldOptions":
        """The options parsed by add_arguments."""
        return cls(partner_rate=args.partner_rate, dim_rate=args.dim_rate)


def make_scene(seed: int, n_objects: int | None = None, canvas: int = CANVAS,
               faint_partner_rate: float = FAINT_PARTNER_RATE, partner_rate: float | None = None,
               dim_rate: float = 0.0) -> Scene:
    """The scene for a seed: 1 to 4 objects, deterministic. `partner_rate` overrides P(partner | anchor)
    (default: each pair's PARTNER_RATE; 0.8 makes the text prior right about the scenes); `dim_rate`
    makes that share of objects of every kind dim (weak evidence, where the prior decides)."""
    rng = random.Random(seed)
    n = n_objects if n_objects is not None else rng.randint(1, MAX_OBJECTS)
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, not {n}")
    names = _pick_names(rng, n, partner_rate)
    kinds = ["partner" if _is_partner(nm) else "other" for nm in names]
    sizes = ["small" if rng.random() < SMALL_RATE[k] else "large" for k in kinds]
    low = [rng.random() < LOW_CONTRAST_RATE[k] for k in kinds]
    # Its own generator, so the rest of the scene does not depend on the faint rate.
    faint_rng = random.Random(f"faint-{seed}")
    faint = [k == "partner" and faint_rng.random() < faint_partner_rate for k in kinds]
    dim_rng = random.Random(f"dim-{seed}")
    dim = [dim_rate > 0 and not f and dim_rng.random() < dim_rate for f in faint]
    centres = _place(rng, [RADIUS[s] for s in sizes], canvas)
    objects = tuple(
        SceneObject(shape=nm[1], color=nm[0], size=s, position=position_of(x, y, canvas), x=x, y=y, low_contrast=lc,
                    faint=f, dim=d)
        for nm, s, lc, f, d, (x, y) in zip(names, sizes, low, faint, dim, centres))
    shade = rng.randint(205, 250)
    background = (shade + rng.randint(-5, 5), shade + rng.randint(-5, 5), shade + rng.randint(-5, 5))
    background = tuple(max(0, min(255, c)) for c in background)
    noise = rng.choice([0.0, 0.0, 6.0, 12.0, 20.0])
    rotation = tuple(rng.uniform(-12, 12) for _ in objects)
    return Scene(seed=seed, objects=objects, background=background, noise=noise, rotation=rotation)


def _shape_points(shape: str, x: float, y: float, r: float, angle: float) -> list[tuple[float, float]]:
    def pt(px: float, py: float) -> tuple[float, float]:
        a = math.radians(angle)
        return (x + px * math.cos(a) - py * math.sin(a), y + px * math.sin(a) + py * math.cos(a))

    if shape == "square":
        s = r * 0.85
        return [pt(-s, -s), pt(s, -s), pt(s, s), pt(-s, s)]
    if shape == "diamond":
        return [pt(0, -r), pt(r * 0.75, 0), pt(0, r), pt(-r * 0.75, 0)]
    if shape == "triangle":
        return [pt(0, -r), pt(r * 0.95, r * 0.75), pt(-r * 0.95, r * 0.75)]
    if shape == "star":
        return [pt((r if i % 2 == 0 else r * 0.42) * math.sin(i * math.pi / 5),
                   -(r if i % 2 == 0 else r * 0.42) * math.cos(i * math.pi / 5)) for i in range(10)]
    if shape == "cross":
        a, b = r * 0.33, r
        return [pt(-a, -b), pt(a, -b), pt(a, -a), pt(b, -a), pt(b, a), pt(a, a),
                pt(a, b), pt(-a, b), pt(-a, a), pt(-b, a), pt(-b, -a), pt(-a, -a)]
    if shape == "heart":
        pts = []
        for i in range(24):
            t = 2 * math.pi * i / 24
            hx = 16 * math.sin(t) ** 3
            hy = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append(pt(hx * r / 16, hy * r / 16 + r * 0.1))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, angle: float, fill) -> None:
    r = RADIUS[obj.size]
    if obj.shape == "circle":
        draw.ellipse([obj.x - r, obj.y - r, obj.x + r, obj.y + r], fill=fill)
    else:
        draw.polygon(_shape_points(obj.shape, obj.x, obj.y, r, angle), fill=fill)


def _angles(scene: Scene) -> tuple[float, ...]:
    return scene.rotation or (0.0,) * len(scene.objects)


def render(scene: Scene, canvas: int = CANVAS) -> Image.Image:
    """Render a scene to an RGB image (deterministic)."""
    img = Image.new("RGB", (canvas, canvas), scene.background)
    draw = ImageDraw.Draw(img)
    for obj, angle in zip(scene.objects, _angles(scene)):
        colour = COLORS[obj.color]
        visibility = (FAINT_VISIBILITY if obj.faint else DIM_VISIBILITY if obj.dim else 0.45 if obj.low_contrast
                      else 1.0)
        if visibility < 1.0:  # blend towards the background: the model must sometimes guess
            colour = tuple(int(visibility * c + (1 - visibility) * b) for c, b in zip(colour, scene.background))
        _draw_object(draw, obj, angle, colour)
    if scene.noise > 0:
        noise_rng = np.random.default_rng(scene.seed)
        arr = np.asarray(img, dtype=np.float32)
        arr = arr + noise_rng.normal(0.0, scene.noise, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def object_mask(scene: Scene, canvas: int = CANVAS) -> np.ndarray:
    """Per-pixel ground truth: 0 for background, i + 1 where object i is visible (later objects on top)."""
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    for index, (obj, angle) in enumerate(zip(scene.objects, _angles(scene))):
        _draw_object(draw, obj, angle, index + 1)
    return np.asarray(mask)
