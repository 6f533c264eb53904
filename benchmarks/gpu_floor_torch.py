"""Hardware reference, not our core: the floor and a whole style-transfer iteration in PyTorch.

The lent H200 has PyTorch but no TensorFlow, so gpu.sh (our TF core) cannot run there. This
script measures what the GPU itself does on the same work, to put gpu.sh's numbers and the
issue's target (a 512² pair, 500 iterations, ≤ 2 s batched: 4 ms per image-iteration) in context:

- floor: VGG19 forward to relu5_1 + gradient of Σ relu5_1 w.r.t. the input;
- iteration: content (relu4_2) + style (Grams of relu1_1…relu5_1, float32) + TV loss, its gradient
  at the image, and an Adam update — the seed recipe's step.

Random He-scaled weights with VGG19's real channel counts (same FLOPs as the real file), NHWC
(channels_last) tensors, cuDNN autotuning on; TF32 (float32 storage, TF32 tensor cores) and bf16
(network in bfloat16, Grams and losses in float32). FLOPs as in benchmarks/flops.py.

    python benchmarks/gpu_floor_torch.py [--sizes 512,1024] [--batches 1,8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (1, 512))  # VGG19 up to conv5_1
STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def vgg19(device) -> list[tuple[str, torch.Tensor | None, torch.Tensor | None]]:
    """(name, weight, bias) per conv/relu/pool layer up to relu5_1."""
    g = torch.Generator().manual_seed(0)
    layers, cin = [], 3
    for b, (convs, cout) in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
            layers.append((f"conv{b}_{i}", w.to(device), torch.zeros(cout, device=device)))
            layers.append((f"relu{b}_{i}", None, None))
            cin = cout
        if b < len(BLOCKS):
            layers.append((f"pool{b}", None, None))
    return layers


def cast(layers, dtype):
    """The layers' weights in `dtype`, once, laid out for NHWC convolutions."""
    out = []
    for name, w, b in layers:
        if w is not None:
            w, b = w.to(dtype).contiguous(memory_format=torch.channels_last), b.to(dtype)
        out.append((name, w, b))
    return out


def forward(layers, x, dtype) -> dict[str, torch.Tensor]:
    out, x = {}, x.to(dtype)
    for name, w, b in layers:
        if w is not None:
            x = F.conv2d(x, w, b, padding=1)
        elif name.startswith("relu"):
            x = out[name] = F.relu(x)
        else:
            x = F.max_pool2d(x, 2)
    return out


def flops(size: int) -> tuple[float, float]:
    """(floor, iteration) FLOPs for one size² image."""
    floor, grams, h, cin = 0.0, 0.0, size, 3
    for b, (convs, cout) in enumerate(BLOCKS, start=1):
        for _ in range(convs):
            floor += 4.0 * h * h * 9 * cin * cout
            cin = cout
        grams += 4.0 * h * h * cout * cout  # the block's first relu is a style layer
        h //= 2 if b < len(BLOCKS) else 1
    return floor, floor + grams


def gram(f: torch.Tensor) -> torch.Tensor:
    f = f.float().flatten(2)  # (B, C, HW), float32
    return f @ f.transpose(1, 2) / f[0].numel()


def timed(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def measure(layers, size: int, batch: int, dtype, reps: int) -> dict[str, float]:
    dev, layers = "cuda", cast(layers, dtype)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def floor():
        (g,) = torch.autograd.grad(forward(layers, x, dtype)["relu5_1"].float().sum(), x)
        return g

    with torch.no_grad():
        target = forward(layers, torch.randn_like(x), dtype)
        content = target["relu4_2"].float()
        grams = {n: gram(target[n]) for n in STYLE}
    img = x.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=10.0)

    def iteration():
        f = forward(layers, img, dtype)
        loss = 5.0 * (f["relu4_2"].float() - content).pow(2).mean()
        loss = loss + 500.0 * sum((gram(f[n]) - grams[n]).pow(2).mean() for n in STYLE) / 5
        tv = (img[:, :, 1:] - img[:, :, :-1]).pow(2).mean()
        loss = loss + 100.0 * (tv + (img[..., 1:] - img[..., :-1]).pow(2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {"floor_s": timed(floor, reps), "iteration_s": timed(iteration, reps)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="512,1024")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_floor_torch.py: no CUDA device")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    layers = vgg19("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| size | batch | convs | floor ms | floor TFLOP/s | iteration ms | iteration TFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for size in map(int, args.sizes.split(",")):
        for batch in map(int, args.batches.split(",")):
            for name, dtype in (("tf32", torch.float32), ("bf16", torch.bfloat16)):
                r = measure(layers, size, batch, dtype, args.reps)
                fl, it = (v * batch for v in flops(size))
                row = {"size": size, "batch": batch, "precision": name, **r}
                row |= {"floor_tflops": fl / r["floor_s"] / 1e12}
                row |= {"iteration_tflops": it / r["iteration_s"] / 1e12}
                rows.append(row)
                print(
                    f"| {size}² | {batch} | {name} | {r['floor_s'] * 1e3:.2f} | "
                    f"{row['floor_tflops']:.0f} | {r['iteration_s'] * 1e3:.2f} | "
                    f"{row['iteration_tflops']:.0f} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
