#!/usr/bin/env python
"""The project's feature backbones against their torchvision equivalents (docs/design.md D22).

Each backbone gets random weights saved in its official file layout (as ``tests/vlmdiff/test_features.py``
does); the project's extractor and the library model load that same file, strictly. Printed per backbone:
the largest absolute difference of the maps the scorer uses, the median CPU time per image over a few warm
runs (own and library interleaved, so a busy machine slows both alike), the lines of own code a switch
would remove, and what the library model needs to take the official file with a strict key check.

    OMP_NUM_THREADS=1 python scripts/compare_backbones.py            # about a minute on one core
    python scripts/compare_backbones.py --names v1r50 resnet50 --runs 15
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import interpolate_embeddings

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)
from vlmdiff.checkpoint import load_state_dict, load_strict  # noqa: E402
from vlmdiff.features import VIT, build_extractor, build_network, clean_keys  # noqa: E402
from vlmdiff.features import resnet as own_resnet  # noqa: E402
from vlmdiff.features import vit as own_vit  # noqa: E402

RESNET_STAGES = {"v1r50": (1, 4), "resnet50": (0, 3)}  # extractor -> slice of layer1..layer4 it scores with


def code_lines(*objects) -> int:
    """Non-blank lines of the source of ``objects`` (classes, functions or modules)."""
    return sum(sum(1 for line in inspect.getsource(o).splitlines() if line.strip()) for o in objects)


def own_lines(name: str) -> tuple[int, str]:
    """Lines of own backbone code that a switch of ``name`` to the library removes, and what stays."""
    if name in RESNET_STAGES:
        if issubclass(own_resnet.ResNet50, torchvision.models.ResNet):
            return 0, "already torchvision's ResNet"
        # torchvision provides the blocks and the layer construction; the stage-returning forward stays
        return code_lines(own_resnet.Bottleneck, own_resnet.ResNet50.__init__), "forward returning layer1..4 stays"
    # DINOv2 (v2s14: LayerScale, mask token) has no torchvision counterpart, so every block class stays, and
    # so do DINO's position-embedding interpolation and the patch-token map; a switch adds the key mapping
    return 0, f"v2s14 keeps every class; +{code_lines(dino_to_torchvision, tv_vit_patches)} lines of mapping"


# --- ResNet-50 ---------------------------------------------------------------------------------------

def tv_resnet(name: str, path: Path) -> tuple[nn.Module, str]:
    """torchvision's resnet50 holding the official file ``path`` of ``name``, and the note on loading."""
    net = torchvision.models.resnet50()
    sd = clean_keys(load_state_dict(path))
    note = "strict as is"
    if "fc.weight" not in sd:  # DINO's backbone file has no classifier
        net.fc = nn.Identity()
        note = "strict after fc = Identity() (no fc in the file)"
    load_strict(net, sd, source=str(path))
    return net.eval(), note


def tv_resnet_stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    outs = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        outs.append(x)
    return outs


# --- DINO ViT ----------------------------------------------------------------------------------------

def dino_to_torchvision(sd: dict) -> dict:
    """DINO's ViT keys -> torchvision ``VisionTransformer`` keys (same tensors; qkv rows are q, k, v in both)."""
    out = {"class_token": sd["cls_token"], "encoder.pos_embedding": sd["pos_embed"],
           "conv_proj.weight": sd["patch_embed.proj.weight"], "conv_proj.bias": sd["patch_embed.proj.bias"],
           "encoder.ln.weight": sd["norm.weight"], "encoder.ln.bias": sd["norm.bias"]}
    names = {"norm1": "ln_1", "attn.qkv.weight": "self_attention.in_proj_weight",
             "attn.qkv.bias": "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj",
             "norm2": "ln_2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            for old, new in names.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            out[f"encoder.layers.encoder_layer_{i}.{rest}"] = v
    return out


def tv_vit(name: str, path: Path, size: int, interpolation: str) -> nn.Module:
    """torchvision's ViT for ``size``² inputs holding the DINO file ``path``; position embeddings resized by
    torchvision's ``interpolate_embeddings`` (``"torchvision"``) or by DINO's rule (``"dino"``)."""
    patch, dim, heads = VIT[name]
    sd = dino_to_torchvision(clean_keys(load_state_dict(path)))
    if size != 224:
        if interpolation == "torchvision":
            sd = interpolate_embeddings(size, patch, sd)
        else:
            own, _ = build_network(name)
            own.pos_embed.data.copy_(sd["encoder.pos_embedding"])
            sd["encoder.pos_embedding"] = own.interpolate_pos_encoding(size // patch, size // patch).detach()
    net = torchvision.models.VisionTransformer(size, patch, 12, heads, dim, 4 * dim)
    net.heads = nn.Identity()  # DINO's backbone file has no classifier
    load_strict(net, sd, source=str(path))
    return net.eval()


def tv_vit_patches(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The last block's normalised patch tokens as a ``(B, D, h, w)`` map (what the scorer uses)."""
    b, h, w = x.shape[0], x.shape[2] // net.patch_size, x.shape[3] // net.patch_size
    tokens = torch.cat([net.class_token.expand(b, -1, -1), net._process_input(x)], dim=1)
    return [net.encoder(tokens)[:, 1:].transpose(1, 2).reshape(b, -1, h, w)]


# --- measurement -------------------------------------------------------------------------------------

def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [t.shape for t in a] == [t.shape for t in b], ([t.shape for t in a], [t.shape for t in b])
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@torch.no_grad()
def interleaved_ms(own, lib, x: torch.Tensor, runs: int) -> tuple[float, float]:
    """Median ms per image of ``own(x)`` and ``lib(x)`` after one warm-up each, alternating the two."""
    own(x), lib(x)
    times = ([], [])
    for _ in range(runs):
        for fn, t in ((own, times[0]), (lib, times[1])):
            start = time.perf_counter()
            fn(x)
            t.append((time.perf_counter() - start) * 1000 / x.shape[0])
    return statistics.median(times[0]), statistics.median(times[1])


def official_file(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    network, _ = build_network(name)
    for m in network.modules():  # non-trivial BatchNorm statistics, so a mix-up of them shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    path = folder / f"{name}.pth"
    torch.save(network.state_dict(), path)
    return path


@torch.no_grad()
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed ResNet runs per model after a warm-up (median)")
    parser.add_argument("--vit_runs", type=int, default=3, help="the same for the (slower) ViTs")
    parser.add_argument("--size", type=int, default=256, help="input side; the pipeline scores 256² images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--names", nargs="+", default=["v1r50", "resnet50", "v1s8", "v1b8"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, args.size, args.size, generator=g)
    x224 = torch.randn(1, 3, 224, 224, generator=g)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            path = official_file(name, Path(tmp))
            own = build_extractor(name, path)
            own_x = own(x)
            if name in RESNET_STAGES:
                lo, hi = RESNET_STAGES[name]
                net, note = tv_resnet(name, path)
                lib = lambda t, net=net, lo=lo, hi=hi: tv_resnet_stages(net, t)[lo:hi]  # noqa: E731
                diff = f"{max_diff(own_x, lib(x)):.1e}"
                library = "torchvision.models.resnet50"
            else:
                lib_224 = tv_vit(name, path, 224, "dino")
                lib_tv = tv_vit(name, path, args.size, "torchvision")
                net = tv_vit(name, path, args.size, "dino")
                lib = lambda t, net=net: tv_vit_patches(net, t)  # noqa: E731
                diff = (f"{max_diff(own(x224), tv_vit_patches(lib_224, x224)):.1e} at 224; at {args.size}: "
                        f"{max_diff(own_x, tv_vit_patches(lib_tv, x)):.1e} (its interpolation), "
                        f"{max_diff(own_x, lib(x)):.1e} (DINO's)")
                library = "torchvision VisionTransformer"
                note = "strict after renaming every key (qkv -> in_proj, fc1/fc2 -> mlp.0/3, ...); heads = Identity()"
            runs = args.runs if name in RESNET_STAGES else args.vit_runs
            own_ms, lib_ms = interleaved_ms(own, lib, x, runs)
            removed, stays = own_lines(name)
            rows.append((name, library, diff, f"{own_ms:.0f}", f"{lib_ms:.0f} ({lib_ms / own_ms:.2f}×)",
                         f"{removed} ({stays})", note))
            print(f"done {name}", file=sys.stderr, flush=True)
    rows.append(("v2s14", "none: torchvision's ViT has no LayerScale / mask token", "-", "-", "-", "0", "-"))
    rows.append(("effnet_lite0*", "none: torchvision has EfficientNet-B0 only (SiLU, squeeze-excitation, "
                 "symmetric padding)", "-", "-", "-", "0", "-"))
    head = ("backbone", "library equivalent", "max |Δ| of scored maps", f"own ms/img ({args.size}²)",
            "library ms/img", "own lines removed", "official file, strict")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} thread(s), "
          f"median of {args.runs} (ResNet) / {args.vit_runs} (ViT) runs\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
