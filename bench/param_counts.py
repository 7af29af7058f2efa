"""Parameter counts of the 13 hsc9 configurations of Table C.1, ours beside the paper's.

Run:  .venv/bin/python bench/param_counts.py [--markdown]

Full-size models are built on the ``meta`` device (shapes only, no memory, well under a
second each).  Counts are trainable parameters (conv and linear weights and biases,
per-channel PReLU slopes).  The first count uses N_b = 180 softmax bins (docs/design.md §4's fit);
the second the hsc9 profile's grid (N_b = 400), which adds 220 × 1025 = 225,500
parameters to every model.  Extra rows give models the paper does not count: cross fusion,
the §7.3 all-band modality and the §7.4 modality-dropout model (2-band + 1-band modalities).
``--norm batch`` counts the models with batch-norm in every conv unit (+0.1 to +0.3%).
"""

from __future__ import annotations

import argparse

from mmzcli.model import (
    HSC9_BANDS,
    PAPER_PARAMETERS_M,
    VARIANTS,
    PhotoZNet,
    build_variant,
    count_parameters,
    modalities_from_profile,
    variant_config,
)

LABELS = {
    "baseline": "baseline (one 9-band modality)",
    "mm2-extremely-early": "2 bands 1st order, extremely early",
    "mm2-very-early": "2 bands 1st order, very early",
    "mm2-early": "2 bands 1st order, early",
    "mm2-middle": "2 bands 1st order, middle",
    "mm2-late": "2 bands 1st order, late",
    "mm1-early": "early, 1st order, 1 band",
    "mm3-early": "early, 1st order, 3 bands",
    "mm4-early": "early, 1st order, 4 bands",
    "mm5-early": "early, 1st order, 5 bands",
    "mm2-o12-early": "early, 2 bands, orders 1+2",
    "mm2-o123-early": "early, 2 bands, orders 1+2+3",
    "mm2-o23-early": "early, 2 bands, orders 2+3",
}


def count(cfg) -> int:
    import torch

    with torch.device("meta"):
        return count_parameters(PhotoZNet(cfg))


def rows(**overrides):
    for name in VARIANTS:
        n180 = count_parameters(build_variant(name, n_bins=180, device="meta", **overrides))
        n400 = count_parameters(build_variant(name, n_bins=400, device="meta", **overrides))
        paper = PAPER_PARAMETERS_M[name]
        yield name, LABELS[name], n180, paper, 100 * (n180 / (paper * 1e6) - 1), n400, 100 * (n400 / (paper * 1e6) - 1)


def extras(**o):
    yield "2 bands 1st order, early, cross fusion", count(variant_config("mm2-early", fusion_type="cross", **o))
    yield "orders 1+2, early, cross fusion (Fig. 2)", count(variant_config("mm2-o12-early", fusion_type="cross", **o))
    yield (
        "2 bands 1st order + all-band modality (§7.3)",
        count(variant_config("mm2-early", modalities=modalities_from_profile(HSC9_BANDS, 2, all_band=True), **o)),
    )
    yield (
        "2 bands + 9 single-band modalities, dropout (§7.4)",
        count(
            variant_config(
                "mm2-early",
                modalities=modalities_from_profile(HSC9_BANDS, 2, single_band=True),
                modality_dropout=True,
                **o,
            )
        ),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs/model.md)")
    ap.add_argument(
        "--norm",
        default="none",
        choices=["none", "batch"],
        help="count with batch-norm in every conv unit (adds 2 parameters per channel)",
    )
    args = ap.parse_args()
    table = list(rows(norm=args.norm))
    if args.markdown:
        print("| variant | configuration | ours, N_b=180 (M) | paper (M) | diff | ours, N_b=400 (M) | diff |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name, label, n, paper, d, n4, d4 in table:
            print(f"| `{name}` | {label} | {n / 1e6:.3f} | {paper:.2f} | {d:+.1f}% | {n4 / 1e6:.3f} | {d4:+.1f}% |")
        print()
        print("| not in Table C.1 | ours, N_b=180 (M) |")
        print("|---|---:|")
        for label, n in extras(norm=args.norm):
            print(f"| {label} | {n / 1e6:.3f} |")
    else:
        print(
            f"{'variant':20s} {'configuration':36s} {'ours(180)':>10s} {'paper':>7s} {'diff':>6s} "
            f"{'ours(400)':>10s} {'diff':>6s}"
        )
        for name, label, n, paper, d, n4, d4 in table:
            print(f"{name:20s} {label:36s} {n / 1e6:10.3f} {paper:7.2f} {d:+5.1f}% {n4 / 1e6:10.3f} {d4:+5.1f}%")
        worst = max(abs(r[4]) for r in table)
        print(f"largest difference (N_b=180): {worst:.1f}%")
        print()
        for label, n in extras(norm=args.norm):
            print(f"{label:52s} {n / 1e6:8.3f} M")


if __name__ == "__main__":
    main()
