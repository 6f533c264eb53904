"""Seconds per iteration of a user's own checkout of anishathalye/neural-style, in a child process.

    python benchmarks/neural_style_ref.py CHECKOUT WEIGHTS.mat SIZE WARMUP REPEATS OUT.json

Nothing of that project is copied here (it is GPL): this script imports the checkout's own
`stylize.py` and `vgg.py` and calls its `stylize()` generator with the defaults of its
`neural_style.py` (Adam lr 10, content 5 from relu4_2, style 500, TV 100, max pooling, starting
from the content), on the same square chelsea × swirls as section 1, timing each iteration.
Written against its TensorFlow 1 graph code (`tf.Session`, `tf.train.AdamOptimizer`): run under
TF2 with `tensorflow` aliased to `tensorflow.compat.v1` and v2 behaviour off, which is why it
lives in its own process. Its loader needs the published file's layout and every conv layer to
relu5_4; `common.synthetic_vgg19` writes its synthetic file that way.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def main(argv: list[str]) -> int:
    checkout, weights, size, warmup, repeats, out = argv
    size, warmup, repeats = int(size), int(warmup), int(repeats)
    source = Path(checkout) / "stylize.py"
    if not source.is_file():
        raise SystemExit(f"{checkout}: no stylize.py (not a checkout of anishathalye/neural-style)")

    from common import median, square  # before the alias below: it imports stylecore (TF2)

    content, style = square("chelsea.png", size), square("swirls.png", size)

    import tensorflow.compat.v1 as tf1

    tf1.disable_v2_behavior()
    sys.modules["tensorflow"] = tf1  # its `import tensorflow as tf` gets the v1 API
    sys.path.insert(0, str(Path(checkout).resolve()))
    import stylize as reference

    try:
        steps = reference.stylize(
            network=weights,
            initial=content,
            initial_noiseblend=0.0,
            content=content,
            styles=[style],
            preserve_colors=False,
            iterations=warmup + repeats + 1,  # the last one also evaluates and copies the image
            content_weight=5.0,
            content_weight_blend=1.0,
            style_weight=500.0,
            style_layer_weight_exp=1.0,
            style_blend_weights=[1.0],
            tv_weight=100.0,
            learning_rate=10.0,
            beta1=0.9,
            beta2=0.999,
            epsilon=1e-8,
            pooling="max",
        )
    except TypeError as exc:  # a generator binds its arguments here: another version's signature
        raise SystemExit(
            f"{source}: its stylize() differs from the 2018 one timed here: {exc}"
        ) from exc
    seconds, start = [], time.perf_counter()
    for _ in steps:
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    timed = seconds[warmup:-1]
    result = {"median": median(timed), "min": min(timed), "max": max(timed), "samples": timed}
    Path(out).write_text(json.dumps({"checkout": str(checkout), **result}))
    print(f"neural-style {size}px: {result['median']:.3f} s/iteration")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
