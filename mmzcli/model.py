"""The multimodal inception network for photometric redshifts.

Follows Ait Ouahmed et al. (2024, A&A 683, A26; arXiv:2310.02185; §3-4, §7.3-7.4,
Appendix C), whose baseline is the inception network of Treyer et al. (2023)
after Pasquet et al. (2019, 'P19'), as in Lin et al.'s (2022) 'Net_T'.  The
layout and the sizing rule are those of docs/design.md §4; docs/model.md compares
the parameter counts with the paper's Table C.1.

    raw cubes N×B×S×S ─ preprocess ─┬─ modality 1 (stem, parallel blocks) ─┐
                                    ├─ modality 2 ...                      ├─ fusion ─ common blocks
                                    └─ modality M ...                      ┘   (concat | cross)
    ─ tail (three 3×3 convs to 96 maps, pool) ─ latent ‖ E(B-V) ─ FC 1024 ─ FC 1024 ─ PDF + z_reg

Always 8 inception blocks in all, avg-pools before blocks 1, 4 and 6; the fusion
stage says how many of them are parallel (per modality).  Modalities of equal
size run together as grouped convolutions: one kernel per layer for all of them.

Order of this file: conv unit, inception block, modality stems and parallel
blocks, fusion, common blocks and tail, heads, full model, loss, modality
helpers, variant registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmzcli.errors import ConfigError
from mmzcli.profiles import FUSION_STAGES

HSC9_BANDS = ("u", "g", "r", "i", "z", "y", "J", "H", "Ks")
FUSION_DEPTH = dict(zip(FUSION_STAGES, (0, 1, 2, 4, 6)))  # parallel blocks before each fusion stage
FUSION_TYPES = ("concat", "cross")
NORMS = ("none", "batch")
N_BLOCKS = 8  # total inception depth, whatever the fusion stage (paper §4.2)
POOL_BEFORE = (0, 3, 5)  # 0-based block indices preceded by a 2×2 avg-pool (blocks 1, 4, 6)


@dataclass
class ModelConfig:
    bands: tuple[str, ...] = HSC9_BANDS  # all bands, profile (wavelength) order
    modalities: tuple[tuple[str, ...], ...] = ()  # band groups; () = baseline, one group of all bands
    fusion: str = "early"  # extremely-early | very-early | early | middle | late
    fusion_type: str = "concat"  # concat | cross (paper §4.3, Hong et al. 2020)
    n_bins: int = 180  # softmax bins of the redshift PDF
    z_min: float = 0.0  # redshift range: the regression head outputs z_min + (z_max - z_min) * y
    z_max: float = 0.4
    width: float = 1.0  # multiplier of every channel count (CPU studies use e.g. 0.25)
    modality_dropout: bool = False  # §7.4: in training, zero 0..max_dropped modalities per batch
    max_dropped: int = 5  # most modalities dropped per batch (never all of them)
    common_width: int = 164  # k of the common inception blocks (3.35k output channels)
    stem_per_band: int = 48  # stem channels per band of a modality
    bands_per_common: float = 3.5  # a modality of s bands gets parallel blocks of width k·s/3.5
    reduce_ratio: float = 0.65  # 1×1 reduction width a = 0.65k before the 5×5, 3×3 and pool branches
    shortcut_ratio: float = 0.7  # width b = 0.7k of the plain 1×1 branch
    cross_ratio: float = 0.5  # cross fusion: each pair's inception block has width cross_ratio·k
    latent: int = 96  # feature maps of the tail = size of the latent vector
    hidden: int = 1024  # width of the two fully connected layers
    norm: str = "none"  # none | batch: normalisation inside every conv unit (the paper uses none)

    def __post_init__(self):
        self.bands = tuple(str(b) for b in self.bands)
        if not self.bands:
            raise ConfigError("model: no bands given")
        if len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"model: bands {list(self.bands)} name a band twice")
        mods = tuple(tuple(str(b) for b in m) for m in self.modalities) or (self.bands,)
        for m in mods:
            if not m:
                raise ConfigError("model: a modality holds no band")
            unknown = [b for b in m if b not in self.bands]
            if unknown:
                raise ConfigError(
                    f"model: modality {'_'.join(m)} names unknown band {unknown[0]!r}; "
                    f"the bands are {', '.join(self.bands)}"
                )
            if len(set(m)) != len(m):
                raise ConfigError(f"model: modality {'_'.join(m)} names a band twice")
        if len(set(mods)) != len(mods):
            raise ConfigError("model: a modality is listed twice")
        self.modalities = mods
        if self.fusion not in FUSION_DEPTH:
            raise ConfigError(f"model: unknown fusion {self.fusion!r}; choose one of {', '.join(FUSION_DEPTH)}")
        if self.fusion_type not in FUSION_TYPES:
            raise ConfigError(
                f"model: unknown fusion type {self.fusion_type!r}; choose one of {', '.join(FUSION_TYPES)}"
            )
        if self.norm not in NORMS:
            raise ConfigError(f"model: unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if not self.width > 0:
            raise ConfigError(f"model: width must be positive, got {self.width}")
        if self.max_dropped < 0 or not self.cross_ratio > 0:
            raise ConfigError("model: max_dropped must be >= 0 and cross_ratio > 0")
        if self.n_bins < 2:
            raise ConfigError(f"model: n_bins must be at least 2, got {self.n_bins}")
        if not self.z_max > self.z_min:
            raise ConfigError(f"model: z_max ({self.z_max}) must exceed z_min ({self.z_min})")

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of ``dataclasses.asdict`` (lists from YAML/JSON become tuples); unknown keys rejected."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"model config: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(names))}")
        return cls(**d)

    # channel counts (per modality / per block), after the width multiplier
    def scaled(self, c: float) -> int:
        return max(1, round(c * self.width))

    def stem_channels(self, n_bands: int) -> int:
        return self.scaled(self.stem_per_band * n_bands)

    def parallel_width(self, n_bands: int) -> int:
        return self.scaled(self.common_width * n_bands / self.bands_per_common)


# ----------------------------------------------------------------------------- conv unit


def conv_unit(
    cfg: ModelConfig, c_in: int, c_out: int, kernel: int, groups: int = 1, act: str = "relu", padding: str = "same"
) -> nn.Sequential:
    """Conv (+ norm) + activation: the one place where layers are made.

    ``c_in``/``c_out`` are per group; the conv maps groups·c_in → groups·c_out
    channels with ``groups`` independent kernels (one per modality).
    """
    pad = kernel // 2 if padding == "same" else 0
    layers: list[nn.Module] = [nn.Conv2d(groups * c_in, groups * c_out, kernel, padding=pad, groups=groups)]
    if cfg.norm == "batch":
        layers.append(nn.BatchNorm2d(groups * c_out))
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "prelu":  # per channel, so that each modality keeps its own slopes
        layers.append(nn.PReLU(groups * c_out))
    elif act == "tanh":
        layers.append(nn.Tanh())
    elif act != "none":
        raise ValueError(act)
    return nn.Sequential(*layers)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1


def keep_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def interleave(parts: list[torch.Tensor], groups: int) -> torch.Tensor:
    """Concatenate grouped tensors per group: [a_1 b_1 .. | a_2 b_2 .. | ...] (one copy, layout kept)."""
    if groups == 1:
        return torch.cat(parts, 1)
    if _is_channels_last(parts[0]):
        nhwc = [p.permute(0, 2, 3, 1).unflatten(3, (groups, -1)) for p in parts]
        return torch.cat(nhwc, 4).flatten(3).permute(0, 3, 1, 2)
    return torch.cat([p.unflatten(1, (groups, -1)) for p in parts], 2).flatten(1, 2)


class SamePool2x2(nn.Module):
    """2×2 average pool, stride 1, padded on the right and bottom (TF 'SAME') so the size is kept."""

    def forward(self, x):
        return F.avg_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)


# ----------------------------------------------------------------------------- inception block


class Inception(nn.Module):
    """Net_T inception block, run for ``groups`` modalities at once (grouped convs).

    Per group: c_in → [1×1 b] ‖ [1×1 a → 5×5 k] ‖ [1×1 a → 3×3 k] ‖ [1×1 a → 2×2 avg-pool]
    = b + 2k + a output channels (a ≈ 0.65k, b ≈ 0.7k: 3.35k).
    """

    @staticmethod
    def widths(cfg: ModelConfig, k: int) -> tuple[int, int, int]:
        """(a, b, output channels) of a block of width k."""
        a = max(1, round(cfg.reduce_ratio * k))
        b = max(1, round(cfg.shortcut_ratio * k))
        return a, b, b + 2 * k + a

    def __init__(self, cfg: ModelConfig, c_in: int, k: int, groups: int = 1):
        super().__init__()
        a, b, self.out_channels = self.widths(cfg, k)  # out_channels: per group
        self.groups = groups
        self.branch1x1 = conv_unit(cfg, c_in, b, 1, groups)
        self.branch5x5 = nn.Sequential(conv_unit(cfg, c_in, a, 1, groups), conv_unit(cfg, a, k, 5, groups))
        self.branch3x3 = nn.Sequential(conv_unit(cfg, c_in, a, 1, groups), conv_unit(cfg, a, k, 3, groups))
        self.branch_pool = nn.Sequential(conv_unit(cfg, c_in, a, 1, groups), SamePool2x2())

    def forward(self, x):
        parts = [self.branch1x1(x), self.branch5x5(x), self.branch3x3(x), self.branch_pool(x)]
        return interleave(parts, self.groups)


# ----------------------------------------------------------------------------- modality stems and parallel blocks


class ModalityStack(nn.Module):
    """Stems and parallel blocks of all modalities of one size s (G of them), as grouped convs."""

    band_index: torch.Tensor  # buffer

    def __init__(self, cfg: ModelConfig, size: int, members: list[int], n_parallel: int):
        super().__init__()
        g = len(members)
        self.size, self.members, self.groups = size, members, g
        band_index = {b: i for i, b in enumerate(cfg.bands)}
        idx = [band_index[b] for m in members for b in cfg.modalities[m]]
        self.register_buffer("band_index", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.gather = idx != list(range(len(cfg.bands)))
        c = cfg.stem_channels(size)
        self.stem = nn.Sequential(
            conv_unit(cfg, size, c, 5, g, act="prelu"),  # N×(G·s)×S×S → N×(G·48s)×S×S
            conv_unit(cfg, c, c, 3, g, act="tanh"),  # N×(G·48s)×S×S
        )
        blocks: list[nn.Module] = []
        k = cfg.parallel_width(size)
        for i in range(n_parallel):  # S/2 (blocks 1-3), S/4 (4-5), S/8 (6)
            if i in POOL_BEFORE:
                blocks.append(nn.AvgPool2d(2))
            block = Inception(cfg, c, k, g)
            blocks.append(block)
            c = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = c  # per modality

    def forward(self, x):
        if self.gather:  # N×B×S×S → N×(G·s)×S×S, bands of each modality in turn
            x = keep_layout(x.index_select(1, self.band_index), _is_channels_last(x))
        return self.blocks(self.stem(x))  # N×(G·C)×S'×S'


class ParallelBranches(nn.Module):
    """One ModalityStack per distinct modality size; returns their outputs (size order)."""

    def __init__(self, cfg: ModelConfig, n_parallel: int):
        super().__init__()
        sizes = sorted({len(m) for m in cfg.modalities})
        self.stacks = nn.ModuleList(
            ModalityStack(cfg, s, [i for i, m in enumerate(cfg.modalities) if len(m) == s], n_parallel) for s in sizes
        )

    def forward(self, x) -> list[torch.Tensor]:
        return [stack(x) for stack in self.stacks]


def modality_stacks(stacks: nn.ModuleList) -> Iterable[ModalityStack]:
    """``ParallelBranches.stacks`` typed as what it holds (to a type checker a ModuleList yields plain Modules)."""
    return cast("Iterable[ModalityStack]", stacks)


# ----------------------------------------------------------------------------- fusion


def _apply_drop(t: torch.Tensor, keep: torch.Tensor, groups: int) -> torch.Tensor:
    """Zero whole modalities: ``keep`` is [N, G] (1 keep, 0 drop) for the G groups of ``t``."""
    keep = keep.to(t.dtype)
    return (t.unflatten(1, (groups, -1)) * keep[:, :, None, None, None]).flatten(1, 2)


class ConcatFusion(nn.Module):
    """Plain concatenation of the modality feature maps (stack order, then modality order)."""

    def __init__(self, cfg: ModelConfig, stacks: nn.ModuleList):
        super().__init__()
        self.out_channels = sum(s.groups * s.out_channels for s in modality_stacks(stacks))

    def forward(self, feats: list[torch.Tensor], stacks) -> torch.Tensor:
        return feats[0] if len(feats) == 1 else torch.cat(feats, 1)


class CrossFusion(nn.Module):
    """Cross fusion (paper §4.3 after Hong et al. 2020), our reading of it.

    For each modality m (in stack order) one inception block of width cross_ratio·k reads
    the pair [F_m ‖ F_m+1] (cyclic; F_m alone when M = 1): parallel blocks, each blending one
    modality with the next.  A 1×1 conv shared by all pairs (the 'common convolution layer')
    maps each output to ceil(3.35k / M) channels, and the results are concatenated.  The
    module takes the place of the first common inception block, so the depth stays 8.
    Pairs with the same input width run as one grouped inception.
    """

    def __init__(self, cfg: ModelConfig, stacks: nn.ModuleList):
        super().__init__()
        chans = [s.out_channels for s in modality_stacks(stacks) for _ in range(s.groups)]  # per modality, stack order
        self.n = n = len(chans)
        self.partner = [(m + 1) % n if n > 1 else None for m in range(n)]
        pair_in = [chans[m] + (chans[p] if p is not None else 0) for m, p in enumerate(self.partner)]
        k = cfg.scaled(cfg.cross_ratio * cfg.common_width)
        self.signatures = sorted(set(pair_in))
        self.members = [[m for m in range(n) if pair_in[m] == c] for c in self.signatures]
        self.blocks = nn.ModuleList(Inception(cfg, c, k, len(mem)) for c, mem in zip(self.signatures, self.members))
        c_pair = Inception.widths(cfg, k)[2]  # out_channels of each pair block
        common_out = Inception.widths(cfg, cfg.scaled(cfg.common_width))[2]
        self.c_shared = math.ceil(common_out / n)
        self.shared = conv_unit(cfg, c_pair, self.c_shared, 1)
        self.out_channels = n * self.c_shared
        self.order = [m for mem in self.members for m in mem]  # modality order after the pair blocks

    def forward(self, feats: list[torch.Tensor], stacks) -> torch.Tensor:
        channels_last = _is_channels_last(feats[0])
        per_mod = [t for f, s in zip(feats, stacks) for t in f.unflatten(1, (s.groups, -1)).unbind(1)]
        outs = []
        for block, mem in zip(self.blocks, self.members):
            pairs = []
            for m in mem:
                partner = self.partner[m]
                pairs.append(per_mod[m] if partner is None else torch.cat([per_mod[m], per_mod[partner]], 1))
            outs.append(block(keep_layout(torch.cat(pairs, 1), channels_last)).unflatten(1, (len(mem), -1)))
        y = torch.cat(outs, 1)  # N×M×C_pair×H×W
        n_img = y.shape[0]
        y = self.shared(keep_layout(y.flatten(0, 1), channels_last))  # one conv for all pairs: (N·M)×C×H×W
        return keep_layout(y.unflatten(0, (n_img, self.n)).flatten(1, 2), channels_last)  # N×(M·C)×H×W


# ----------------------------------------------------------------------------- common blocks and tail


class Tail(nn.Module):
    """Three 3×3 VALID convs to 96 maps, then a pool to 1×1: N×C×8×8 → 6 → 4 → 2 → N×96.

    A conv whose input is under 4 px (32-px cutouts reach the tail at 4×4) is zero-padded
    instead ('same'), and the last pool is adaptive, so 32-px inputs give 4 → 2 → 2 → 2 → 1.
    At 64 px this is exactly VALID convs and a 2×2 average pool.
    """

    def __init__(self, cfg: ModelConfig, c_in: int):
        super().__init__()
        c = cfg.scaled(cfg.latent)
        self.convs = nn.ModuleList(
            [
                conv_unit(cfg, c_in, c, 3, padding="valid"),
                conv_unit(cfg, c, c, 3, padding="valid"),
                conv_unit(cfg, c, c, 3, padding="valid"),
            ]
        )
        self.out_channels = c

    def forward(self, x):
        for conv in self.convs:
            if min(x.shape[-2:]) < 4:
                x = F.pad(x, (1, 1, 1, 1))
            x = conv(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# ----------------------------------------------------------------------------- heads


class RedshiftHead(nn.Module):
    """latent ‖ E(B-V) → FC 1024 → FC 1024 → softmax logits over n_bins and a scalar redshift."""

    def __init__(self, cfg: ModelConfig, c_in: int):
        super().__init__()
        h = cfg.scaled(cfg.hidden)
        self.fc = nn.Sequential(nn.Linear(c_in, h), nn.ReLU(inplace=True), nn.Linear(h, h), nn.ReLU(inplace=True))
        self.pdf = nn.Linear(h, cfg.n_bins)
        self.reg = nn.Linear(h, 1)
        self.z_min, self.z_span = cfg.z_min, cfg.z_max - cfg.z_min

    def reset_output(self):
        """Small output layers: a near-flat PDF and z_reg near mid-range at the start."""
        nn.init.normal_(self.pdf.weight, std=0.01)
        nn.init.zeros_(self.pdf.bias)
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.constant_(self.reg.bias, 0.5)

    def forward(self, latent):
        h = self.fc(latent)
        return self.pdf(h), self.z_min + self.z_span * self.reg(h).squeeze(1)


# ----------------------------------------------------------------------------- full model


class PhotoZNet(nn.Module):
    """Multimodal inception network: raw cubes + E(B-V) → (PDF logits [N, n_bins], z_reg [N])."""

    norm_mean: torch.Tensor  # buffers
    norm_std: torch.Tensor
    stack_order: torch.Tensor

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        n_par = FUSION_DEPTH[cfg.fusion]
        self.n_modalities = len(cfg.modalities)
        self.register_buffer("norm_mean", torch.zeros(len(cfg.bands)))
        self.register_buffer("norm_std", torch.ones(len(cfg.bands)))

        self.branches = ParallelBranches(cfg, n_par)  # stems + blocks 1..n_par, per modality
        stacks = self.branches.stacks
        cross = cfg.fusion_type == "cross"
        self.fusion = (CrossFusion if cross else ConcatFusion)(cfg, stacks)
        # order in which fused modalities appear: the dropout mask follows it
        members = [m for s in modality_stacks(stacks) for m in s.members]
        self.register_buffer("stack_order", torch.tensor(members, dtype=torch.long), persistent=False)
        self.pool_at_fusion = n_par in POOL_BEFORE  # that pool runs per modality, just before fusion
        common: list[nn.Module] = []
        c, k = self.fusion.out_channels, cfg.scaled(cfg.common_width)
        for i in range(n_par + (1 if cross else 0), N_BLOCKS):  # blocks n_par+1 .. 8
            if i in POOL_BEFORE and i != n_par:  # (the pool before block n_par is done at fusion)
                common.append(nn.AvgPool2d(2))
            block = Inception(cfg, c, k)
            common.append(block)
            c = block.out_channels
        self.common = nn.Sequential(*common)
        self.tail = Tail(cfg, c)
        self.latent_dim = self.tail.out_channels + 1  # ‖ E(B-V)
        self.head = RedshiftHead(cfg, self.latent_dim)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        # He-normal (fan-in) weights, zero biases: without normalisation, PyTorch's default
        # uniform init shrinks the signal at every layer and the 20-odd layers learn nothing.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, RedshiftHead):
            module.reset_output()

    # ---- preprocessing (P19): dynamic-range compression, per-band centring, missing bands zero
    def preprocess(self, x, band_ok=None):
        x = x.float()
        x = torch.sign(x) * (torch.sqrt(x.abs() + 1) - 1)
        x = (x - self.norm_mean[None, :, None, None]) / self.norm_std[None, :, None, None]
        if band_ok is not None:
            x = x * band_ok.to(x.dtype)[:, :, None, None]
        return x

    def draw_drop(self, n: int, device=None) -> torch.Tensor:
        """§7.4 training draw: 0..max_dropped modalities (never all), the same for the whole batch."""
        m = self.n_modalities
        n_drop = int(torch.randint(0, min(self.config.max_dropped, m - 1) + 1, ()).item())
        drop = torch.zeros(m, dtype=torch.bool)
        drop[torch.randperm(m)[:n_drop]] = True
        return drop.expand(n, m).to(device, non_blocking=True)

    def forward_features(self, x, ebv=None, band_ok=None, drop=None):
        """Raw cubes N×B×S×S (+ E(B-V) [N]) → latent N×(96w+1). ``drop``: bool [N, M] to zero out."""
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
        x = self.preprocess(x, band_ok)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if drop is None and self.training and self.config.modality_dropout and self.n_modalities > 1:
            drop = self.draw_drop(x.shape[0], x.device)
        feats = self.branches(x)  # [N×(G_s·C_s)×S'×S' per modality size]
        if drop is not None:
            drop = drop.to(device=x.device, dtype=torch.bool)
            if drop.shape[-1] != self.n_modalities:
                raise ValueError(f"drop has {drop.shape[-1]} columns for {self.n_modalities} modalities")
            keep = ~drop.expand(x.shape[0], -1)[:, self.stack_order]  # [M] or [N, M]
            feats, j = list(feats), 0
            for i, stack in enumerate(self.branches.stacks):
                feats[i] = _apply_drop(feats[i], keep[:, j : j + stack.groups], stack.groups)
                j += stack.groups
        if self.pool_at_fusion:  # the pool before the first common block
            feats = [F.avg_pool2d(f, 2) for f in feats]
        h = self.fusion(feats, self.branches.stacks)
        h = self.tail(self.common(h))  # N×96w
        if ebv is None:
            ebv = torch.zeros(h.shape[0], device=h.device)
        return torch.cat([h, ebv.reshape(-1, 1).to(h.dtype)], 1)

    def forward_head(self, latent):
        return self.head(latent)

    def forward(self, x, ebv=None, band_ok=None, drop=None):
        return self.forward_head(self.forward_features(x, ebv, band_ok, drop))

    def summary(self) -> str:
        """A few lines describing the layout (for ``mmz train --dry-run``)."""
        cfg = self.config
        lines = [
            f"fusion: {cfg.fusion} ({FUSION_DEPTH[cfg.fusion]} parallel + "
            f"{N_BLOCKS - FUSION_DEPTH[cfg.fusion]} common inception blocks), type {cfg.fusion_type}, "
            f"width ×{cfg.width:g}",
            f"modalities ({self.n_modalities}): {' '.join('_'.join(m) for m in cfg.modalities)}",
        ]
        for s in modality_stacks(self.branches.stacks):
            n = sum(p.numel() for p in s.parameters())
            lines.append(
                f"  {s.groups} × {s.size}-band modality: stem {cfg.stem_channels(s.size)} ch, "
                f"parallel width {cfg.parallel_width(s.size)} → {s.out_channels} ch each "
                f"(grouped, {n:,} parameters)"
            )
        lines.append(
            f"fused channels {self.fusion.out_channels}; common width {cfg.scaled(cfg.common_width)}; "
            f"latent {self.latent_dim - 1}+1 (E(B-V)); FC {cfg.scaled(cfg.hidden)}×2; "
            f"{cfg.n_bins} bins + regression"
            + (f"; modality dropout ≤{cfg.max_dropped}" if cfg.modality_dropout else "")
        )
        return "\n".join(lines)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- loss


def loss_fn(logits, z_reg, z_true, bin_index):
    """Paper eq. (1): cross-entropy of the PDF + MAE of the regression (batch means, fp32)."""
    return F.cross_entropy(logits.float(), bin_index) + (z_reg.float() - z_true.float()).abs().mean()


# ----------------------------------------------------------------------------- modalities


def modalities_from_profile(
    bands, size: int = 2, orders=(1,), all_band: bool = False, single_band: bool = False
) -> tuple[tuple[str, ...], ...]:
    """Modalities of ``size`` bands for each order (Table C.2): bands i, i+o, ..., i+(size-1)o.

    ``all_band`` adds one modality holding every band (§7.3); ``single_band`` adds the
    single-band modalities that keep all information when a pair is dropped (§7.4).

    >>> modalities_from_profile("ugriz", 2, (1, 2))
    (('u', 'g'), ('g', 'r'), ('r', 'i'), ('i', 'z'), ('u', 'r'), ('g', 'i'), ('r', 'z'))
    """
    bands = tuple(bands)
    n = len(bands)
    if not 1 <= size <= n:
        raise ConfigError(f"modality size {size} is not between 1 and the number of bands ({n})")
    orders = tuple(orders) or (1,)
    mods: list[tuple[str, ...]] = []
    for o in orders:
        if o < 1:
            raise ConfigError(f"modality order must be 1 or more, got {o}")
        if size > 1 and (size - 1) * o >= n:
            raise ConfigError(f"no {size}-band modality of order {o} fits in {n} bands ({', '.join(bands)})")
        for i in range(n - (size - 1) * o):
            m = tuple(bands[i + j * o] for j in range(size))
            if m not in mods:
                mods.append(m)
    return add_modalities(mods, bands, all_band, single_band)


def add_modalities(modalities, bands, all_band: bool = False, single_band: bool = False):
    """Append the all-band modality (§7.3) and/or the single-band ones (§7.4), skipping repeats.

    For explicit lists: ``add_modalities(parse_modalities("u,g;g,r", bands), bands, single_band=True)``.
    """
    bands = tuple(bands)
    mods = [tuple(m) for m in modalities]
    extra = ([bands] if all_band else []) + ([(b,) for b in bands] if single_band else [])
    mods += [m for m in extra if m not in mods]
    return tuple(mods)


def parse_modalities(text: str, bands) -> tuple[tuple[str, ...], ...]:
    """'u,g;g,r;r,i' → (('u','g'), ('g','r'), ('r','i')); bands kept in profile order.

    Band names match exactly, else case-insensitively when that is unambiguous.
    """
    bands = tuple(bands)
    lower: dict[str, list[str]] = {}
    for b in bands:
        lower.setdefault(b.lower(), []).append(b)
    mods: list[tuple[str, ...]] = []
    for part in str(text).split(";"):
        names = [p.strip() for p in part.replace("_", ",").split(",") if p.strip()]
        if not names:
            if part.strip() or len(text.split(";")) == 1:
                raise ConfigError(f"modalities {text!r}: empty modality; write e.g. 'u,g;g,r'")
            continue
        found = []
        for name in names:
            if name in bands:
                found.append(name)
            elif len(lower.get(name.lower(), [])) == 1:
                found.append(lower[name.lower()][0])
            else:
                raise ConfigError(f"modalities {text!r}: unknown band {name!r}; the bands are {', '.join(bands)}")
        if len(set(found)) != len(found):
            raise ConfigError(f"modalities {text!r}: modality {part.strip()!r} names a band twice")
        m = tuple(b for b in bands if b in found)
        if m in mods:
            raise ConfigError(f"modalities {text!r}: modality {part.strip()!r} is listed twice")
        mods.append(m)
    if not mods:
        raise ConfigError(f"modalities {text!r}: no modality given; write e.g. 'u,g;g,r'")
    return tuple(mods)


# ----------------------------------------------------------------------------- variants (Table C.1)

# name -> overrides: 'fusion' and the modality rule (size, orders; baseline = one modality of all bands)
VARIANTS: dict[str, dict] = {
    "baseline": {"baseline": True, "fusion": "early"},
    "mm2-extremely-early": {"size": 2, "orders": (1,), "fusion": "extremely-early"},
    "mm2-very-early": {"size": 2, "orders": (1,), "fusion": "very-early"},
    "mm2-early": {"size": 2, "orders": (1,), "fusion": "early"},
    "mm2-middle": {"size": 2, "orders": (1,), "fusion": "middle"},
    "mm2-late": {"size": 2, "orders": (1,), "fusion": "late"},
    "mm1-early": {"size": 1, "orders": (1,), "fusion": "early"},
    "mm3-early": {"size": 3, "orders": (1,), "fusion": "early"},
    "mm4-early": {"size": 4, "orders": (1,), "fusion": "early"},
    "mm5-early": {"size": 5, "orders": (1,), "fusion": "early"},
    "mm2-o12-early": {"size": 2, "orders": (1, 2), "fusion": "early"},
    "mm2-o123-early": {"size": 2, "orders": (1, 2, 3), "fusion": "early"},
    "mm2-o23-early": {"size": 2, "orders": (2, 3), "fusion": "early"},
}

# Table C.1 of the paper, hsc9, millions of trainable parameters
PAPER_PARAMETERS_M: dict[str, float] = {
    "baseline": 19.03,
    "mm2-extremely-early": 9.52,
    "mm2-very-early": 11.16,
    "mm2-early": 12.51,
    "mm2-middle": 15.22,
    "mm2-late": 17.94,
    "mm1-early": 8.80,
    "mm3-early": 17.23,
    "mm4-early": 22.11,
    "mm5-early": 26.29,
    "mm2-o12-early": 17.37,
    "mm2-o123-early": 21.54,
    "mm2-o23-early": 15.98,
}


def variant_config(name: str, bands=HSC9_BANDS, n_bins: int = 180, width: float = 1.0, **overrides) -> ModelConfig:
    """The ModelConfig of a registered variant; ``overrides`` set any other ModelConfig field."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown model variant {name!r}; choose one of {', '.join(VARIANTS)}")
    v = dict(VARIANTS[name])
    bands = tuple(bands)
    if v.pop("baseline", False):
        v["modalities"] = (bands,)
    else:
        v["modalities"] = modalities_from_profile(bands, v.pop("size"), v.pop("orders"))
    return ModelConfig(**{**v, "bands": bands, "n_bins": n_bins, "width": width, **overrides})


def build_variant(
    name: str, bands=HSC9_BANDS, n_bins: int = 180, width: float = 1.0, device=None, **overrides
) -> PhotoZNet:
    """Build a registered variant (``device='meta'`` to count parameters without allocating)."""
    cfg = variant_config(name, bands, n_bins, width, **overrides)
    if device is None:
        return PhotoZNet(cfg)
    with torch.device(device):
        return PhotoZNet(cfg)


__all__ = [
    "ModelConfig",
    "PhotoZNet",
    "Inception",
    "conv_unit",
    "loss_fn",
    "count_parameters",
    "modalities_from_profile",
    "add_modalities",
    "parse_modalities",
    "VARIANTS",
    "PAPER_PARAMETERS_M",
    "build_variant",
    "variant_config",
    "HSC9_BANDS",
    "FUSION_DEPTH",
    "FUSION_TYPES",
]
