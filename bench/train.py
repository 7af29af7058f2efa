"""Training and inference throughput of the network, FLOPs and the multimodal/baseline cost ratio.

    .venv/bin/python bench/train.py [--widths 1,0.25] [--steps 8] [--device auto]

For the hsc9 baseline (one modality of 9 bands) and the 2-band first-order
early-fusion model, at each width: training samples/s (Adam step, batch 32,
bf16 autocast + channels_last, and fp32), inference samples/s (batch 256,
bf16), FLOPs per sample (torch.utils.flop_counter, forward; training is
about 3x), the achieved GFLOP/s, and the multimodal/baseline time ratio
(the paper measured 1.2; our target is <= 1.05).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmzcli.model import PhotoZNet, loss_fn, variant_config

PEAKS = {"cpu": {"fp32": 186.0, "bf16": 400.0}}  # GFLOP/s, matmul peak measured on the 2-core CI machine


def batch(n: int, bands: int, device):
    x = torch.randn(n, bands, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    return x, torch.rand(n, device=device) * 0.1, torch.ones(n, bands, dtype=torch.bool, device=device)


def flops_per_sample(model: PhotoZNet, bands: int, device) -> float:
    x, ebv, ok = batch(2, bands, device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, ebv, ok)
    return counter.get_total_flops() / 2


def timed(fn, steps: int, device) -> float:
    fn()  # warm-up (allocations, autotuning)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(name: str, width: float, steps: int, device, amp: bool) -> dict:
    config = variant_config(name, width=width, n_bins=400)
    model = PhotoZNet(config).to(device, memory_format=torch.channels_last)
    bands = len(config.bands)
    optimizer = torch.optim.Adam(model.parameters())
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    x, ebv, ok = batch(32, bands, device)
    z = torch.rand(32, device=device) * 4
    bins = (z / 0.01).long().clamp(max=399)

    def train_step():
        with cast:
            logits, z_reg = model(x, ebv, ok)
        loss = loss_fn(logits, z_reg, z, bins)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    xi, ebvi, oki = batch(256, bands, device)

    def infer():
        with torch.no_grad(), cast:
            model(xi, ebvi, oki)

    model.train()
    t_train = timed(train_step, steps, device)
    model.eval()
    t_infer = timed(infer, max(2, steps // 4), device)
    flops = flops_per_sample(model, bands, device)
    return {
        "name": name,
        "width": width,
        "amp": amp,
        "params": sum(p.numel() for p in model.parameters()),
        "train": 32 / t_train,
        "infer": 256 / t_infer,
        "flops": flops,
        "train_gflops": 3 * flops * 32 / t_train / 1e9,
        "infer_gflops": flops * 256 / t_infer / 1e9,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="1,0.25")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {label}; torch {torch.__version__}")
    print(
        f"{'model':12s} {'width':>5s} {'prec':>4s} {'params':>10s} {'GFLOP/sample':>12s} {'train/s':>8s} "
        f"{'GFLOP/s':>8s} {'infer/s':>8s} {'GFLOP/s':>8s}"
    )
    for width in map(float, args.widths.split(",")):
        rows = {}
        for amp in (True, False):
            for name in ("baseline", "mm2-early"):
                r = measure(name, width, args.steps, device, amp)
                rows[name, amp] = r
                print(
                    f"{name:12s} {width:5.2f} {'bf16' if amp else 'fp32':>4s} {r['params']:10,d} "
                    f"{r['flops'] / 1e9:12.3f} {r['train']:8.1f} {r['train_gflops']:8.1f} {r['infer']:8.1f} "
                    f"{r['infer_gflops']:8.1f}"
                )
        for amp in (True, False):
            ratio = rows["baseline", amp]["train"] / rows["mm2-early", amp]["train"]
            print(
                f"  width {width:g} {'bf16' if amp else 'fp32'}: multimodal/baseline training time ratio "
                f"{ratio:.2f} (paper 1.2; target <= 1.05)"
            )
    if device.type == "cpu":
        print(f"machine matmul peak: fp32 {PEAKS['cpu']['fp32']:.0f}, bf16 {PEAKS['cpu']['bf16']:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
