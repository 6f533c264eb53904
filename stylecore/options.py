"""Every stylization option in one frozen dataclass, with its presets."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any

from stylecore.errors import OptionsError

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
MAX_SIZE = 8192  # longest side in pixels; past this one image needs > 100 GB of activations
MAX_ITERATIONS = 100_000
XLA_AUTO_MIN_SIZE = 256  # on a GPU, below this or below the iterations, the compile is not repaid
XLA_AUTO_MIN_ITERATIONS = 50
MIN_TILE = 32  # px: smaller tiles spend nearly all their work on the halo


@dataclass(frozen=True)
class StyleOptions:
    """What to optimize and how; one value of this is passed whole through the pipeline."""

    # The network: a known name (vgg19, vgg16-hed) whose file we find, or a weights file path.
    network: str = "vgg19"
    weights: str | None = None  # a .mat/.h5 path; overrides the network's default file
    pooling: str = "max"  # max | avg

    content_layers: tuple[str, ...] = ("relu4_2",)
    content_layer_weights: tuple[float, ...] = ()  # empty: equal weights
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weight_exp: float = 1.0  # layer i weighs exp**i before normalising; 1 is equal

    # Measured with vgg16-hed at 128 px (README, Quality): 200/500/1 keeps relu4_2 within ~16% of
    # the content's while the Gram distance falls to under 1% of the content's.
    content_weight: float = 200.0
    style_weight: float = 500.0
    tv_weight: float = 1.0
    normalize_losses: bool = False  # True: each term relative to its target's energy

    style_blend: tuple[float, ...] = ()  # one weight per style; empty: equal
    style_scale: float = 1.0  # the style's longest side = the content's × this
    preserve_colors: bool = False  # keep the content's colours, transfer luminance only

    init: str = "content"  # content | noise | a path to an image
    init_noise: float = 0.256  # noise std in mean-subtracted pixel units (the seed's value)
    seed: int = 0

    optimizer: str = "lbfgs"  # lbfgs | adam
    learning_rate: float | None = None  # step size; None: Adam 10 (pixel units), L-BFGS 1
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    lbfgs_memory: int = 20  # L-BFGS history pairs (scipy's maxcor)
    iterations: int = 300  # at the final size; coarse levels take the same number

    size: int = 512  # longest side of the output, in pixels
    levels: int = 1  # coarse-to-fine: sizes size/2**(levels-1), …, size

    # The network's arithmetic: float32, bfloat16, or auto = bfloat16 where the device does it
    # natively (CPUs with AVX-512 BF16 or AMX, GPUs with bf16 tensor cores; stylecore/hardware.py)
    # and float32 elsewhere. Grams, losses and the image stay float32. auto measured within 3% of
    # float32's scores (benchmarks/RESULTS.md), so it is the default; tests that check float32
    # arithmetic exactly pin precision="float32".
    precision: str = "auto"
    # Compile each optimizer step with XLA. None (auto): off on CPUs, where the step with its
    # flipped-kernel gradients measured as fast or faster without it (README, Performance); on a
    # GPU, on when the run repays the compile (a few seconds per image shape): size ≥ 256 px and
    # ≥ 50 iterations — not yet measured on a GPU (benchmarks/gpu.sh compares both).
    xla: bool | None = None

    # Print sizes: "auto" runs a level untiled when its step fits the device's free memory and in
    # the largest tiles that fit otherwise; "0" never tiles; "N" tiles of at most N px (stylecore/tiling.py).
    tile: str = "auto"
    # Stop a level early when the total loss improved by less than this fraction over the last
    # CONVERGENCE_WINDOW iterations; 0: always run every iteration. 0.005 measured on 8 varied
    # pairs: 0.65× the time, no visible change (benchmarks/RESULTS.md), so it is the default;
    # tests that count iterations pin 0.
    tolerance: float = 0.005
    # Save the current image and optimizer state every this many seconds while a pair runs, so a
    # killed pair resumes there; 0: never.
    checkpoint_every: float = 60.0

    # Clips: the temporal loss's weight (a frame pulled toward the previous stylized frame warped
    # by the optical flow, where the flow is reliable), iterations of each frame after a shot's
    # first (None: the same as `iterations`; never more), and the longest clip accepted.
    # benchmarks/video.py (vgg16-hed, 128 px, frame_iterations a third of iterations): weight 3
    # left 0.10× the flicker of frames stylized on their own, the style distance 5.6% above.
    temporal_weight: float = 3.0
    frame_iterations: int | None = 100
    max_frames: int = 10_000

    def __post_init__(self) -> None:
        for problem in _problems(self):
            raise OptionsError(problem)

    @property
    def tile_px(self) -> int | None:
        """The tile option as a number: None for auto, 0 for never, else the largest tile side."""
        return None if self.tile == "auto" else int(self.tile)

    @property
    def step_size(self) -> float:
        """The learning rate in effect: the one given, else the optimizer's own default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 10.0 if self.optimizer == "adam" else 1.0

    def use_xla(self, gpu: bool) -> bool:
        """Whether steps are XLA-compiled on that kind of device: the option, else the rule above."""
        if self.xla is not None:
            return self.xla
        long_enough = self.size >= XLA_AUTO_MIN_SIZE and self.iterations >= XLA_AUTO_MIN_ITERATIONS
        return gpu and long_enough

    def identity(self) -> dict[str, Any]:
        """The options that can change an output's pixels, for keys that name outputs: the
        result-neutral ones left out, and options added after outputs were first keyed left out
        at their defaults (so an upgrade does not redo a finished catalogue)."""
        values = self.to_dict()
        # auto's results match float32's within 3% (benchmarks/RESULTS.md), so outputs made before auto keep their names.
        if values["precision"] == "auto":
            values["precision"] = "float32"
        return {
            k: v
            for k, v in values.items()
            if k not in RESULT_NEUTRAL and not (k in ADDED_LATER and v == _DEFAULTS[k])
        }

    def replace(self, **changes: Any) -> StyleOptions:
        """A copy with some options changed (validated like any other)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, tuples as lists."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: StyleOptions | None = None) -> StyleOptions:
        """Options from loosely typed values (CLI strings, manifest cells, JSON), over `base`."""
        base = base or cls()
        changes = {name: coerce(name, value) for name, value in values.items()}
        return base.replace(**changes)


# How a result is computed, not what it is: tiled steps match untiled ones (tests/test_tiling.py),
# checkpoints resume where they stopped, max_frames only refuses.
RESULT_NEUTRAL = ("tile", "checkpoint_every", "max_frames")
ADDED_LATER = ("tolerance", "temporal_weight", "frame_iterations")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(StyleOptions)}


def option_names() -> tuple[str, ...]:
    """The names of every option, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(StyleOptions))


def suggest(name: str, known: typing.Iterable[str]) -> str:
    """' (did you mean x?)' for a misspelled name, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_FIELD_TYPES = typing.get_type_hints(StyleOptions)


def coerce(name: str, value: Any) -> Any:
    """Convert one loosely typed value (e.g. the string '0.5') to the option's type."""
    if name not in _FIELD_TYPES:
        raise OptionsError(f"unknown option '{name}'{suggest(name, option_names())}")
    kind = _FIELD_TYPES[name]
    try:
        return _convert(kind, value)
    except (TypeError, ValueError) as exc:
        raise OptionsError(f"option '{name}': cannot read {value!r} as {_describe(kind)}") from exc


def _convert(kind: Any, value: Any) -> Any:
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None or value == "":
            return None
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(
            _convert(args[0], item.strip() if isinstance(item, str) else item)
            for item in items
            if item != ""
        )
    if kind is bool:
        return _to_bool(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value) if not isinstance(value, str) else int(value.strip())
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if kind is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # tile: 512 in a YAML or JSON manifest
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(kind)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def _describe(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true/false", str: "text"}
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        return f"a comma-separated list of {_describe(args[0])}s"
    if type(None) in args:
        return _describe(next(a for a in args if a is not type(None)))
    return names.get(kind, str(kind))


def _problems(o: StyleOptions) -> typing.Iterator[str]:
    """Each out-of-range value, as a message naming the option."""
    if o.pooling not in ("max", "avg"):
        yield f"option 'pooling': {o.pooling!r} is not max or avg"
    if o.precision not in ("float32", "bfloat16", "auto"):
        yield f"option 'precision': {o.precision!r} is not float32, bfloat16 or auto"
    if o.optimizer not in ("lbfgs", "adam"):
        yield f"option 'optimizer': {o.optimizer!r} is not lbfgs or adam"
    if not o.content_layers and o.content_weight > 0:
        yield "option 'content_layers': empty while content_weight > 0"
    if not o.style_layers:
        yield "option 'style_layers': at least one style layer is needed"
    if o.content_layer_weights and len(o.content_layer_weights) != len(o.content_layers):
        yield "option 'content_layer_weights': needs one weight per content layer"
    for name in ("content_weight", "style_weight", "tv_weight", "init_noise", "epsilon"):
        if not 0 <= getattr(o, name) < math.inf:  # also catches NaN
            yield f"option '{name}': must be ≥ 0 and finite, got {getattr(o, name)}"
    if o.learning_rate is not None and not o.learning_rate > 0:
        yield f"option 'learning_rate': must be > 0, got {o.learning_rate}"
    for name in ("style_scale", "style_layer_weight_exp"):
        if not getattr(o, name) > 0:
            yield f"option '{name}': must be > 0, got {getattr(o, name)}"
    if any(not w >= 0 for w in o.style_blend + o.content_layer_weights):
        yield "option 'style_blend'/'content_layer_weights': weights must be ≥ 0"
    if o.style_blend and sum(o.style_blend) <= 0:
        yield "option 'style_blend': the weights sum to zero"
    if not 0 <= o.beta1 < 1 or not 0 <= o.beta2 < 1:
        yield "option 'beta1'/'beta2': must be in [0, 1)"
    if not 1 <= o.iterations <= MAX_ITERATIONS:
        yield f"option 'iterations': must be 1…{MAX_ITERATIONS}, got {o.iterations}"
    if not 16 <= o.size <= MAX_SIZE:
        yield f"option 'size': must be 16…{MAX_SIZE} pixels, got {o.size}"
    if not 1 <= o.levels <= 6 or o.size >> (o.levels - 1) < 16:
        yield f"option 'levels': {o.levels} levels of size {o.size} go below 16 px"
    if o.tile != "auto" and not (
        o.tile.isdigit() and (int(o.tile) == 0 or int(o.tile) >= MIN_TILE)
    ):
        yield f"option 'tile': {o.tile!r} is not auto, 0 (never tile) or a size ≥ {MIN_TILE} px"
    for name in ("tolerance", "checkpoint_every", "temporal_weight"):
        if not 0 <= getattr(o, name) < math.inf:
            yield f"option '{name}': must be ≥ 0 and finite, got {getattr(o, name)}"
    if o.frame_iterations is not None and not 1 <= o.frame_iterations <= MAX_ITERATIONS:
        yield f"option 'frame_iterations': must be 1…{MAX_ITERATIONS}, got {o.frame_iterations}"
    if o.max_frames < 1:
        yield f"option 'max_frames': must be ≥ 1, got {o.max_frames}"
    if o.lbfgs_memory < 1:
        yield f"option 'lbfgs_memory': must be ≥ 1, got {o.lbfgs_memory}"


# The StyleNet recipe exactly: content relu4_2 + relu5_2, TV 100, Adam lr 10 from noise, 100 steps.
SEED = StyleOptions(
    content_layers=("relu4_2", "relu5_2"),
    content_layer_weights=(0.5, 0.5),
    content_weight=5.0,
    style_weight=500.0,
    tv_weight=100.0,
    init="noise",
    optimizer="adam",
    learning_rate=10.0,
    iterations=100,
    precision="float32",  # exactly: not bfloat16 where the hardware has it
    tolerance=0.0,  # every one of the 100 steps
)
DEFAULTS = StyleOptions()
PRESETS: dict[str, StyleOptions] = {"default": DEFAULTS, "seed": SEED}


def preset(name: str) -> StyleOptions:
    """The preset called `name`."""
    if name not in PRESETS:
        raise OptionsError(
            f"unknown preset '{name}'{suggest(name, PRESETS)}; known: {', '.join(PRESETS)}"
        )
    return PRESETS[name]


__all__ = [
    "StyleOptions",
    "SEED",
    "DEFAULTS",
    "PRESETS",
    "preset",
    "coerce",
    "option_names",
    "suggest",
]
