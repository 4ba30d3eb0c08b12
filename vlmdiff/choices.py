"""The names the pipeline's registries accept, importable without torch.

Each registry's module takes its names from here (the data sets of :func:`vlmdiff.data.build_dataset`, the
start modes of the test-time reconstruction, the metric modes, the test-time precisions, the training
optimisers, the synthetic benchmark's classes, the demo's captions, the autoencoder finetuning's perceptual
terms), and the command lines offer them as their
settings' choices, so that ``--help`` lists them without importing torch. The feature extractors (:data:`vlmdiff.features.EXTRACTORS`) and the captioning
backends and prompts (:mod:`vlmdiff.captioning`) already import without it and are used from there.
"""

DATASETS = ("mvtec", "visa", "realiad", "coco", "cifar10", "cifar100", "custom")
# "reference": the full uniform DDIM grid whatever the start step; "matched": the grid starts at the start step
START_MODES = ("reference", "matched")
METRICS_MODES = ("paper", "exact")
# test-time precision -> the torch dtype the networks autocast to (None: float32 throughout)
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
OPTIMIZERS = ("adamw", "adamw8bit")
# the synthetic benchmark's classes (vlmdiff.data.synthetic) and those the demo uses by default
SYNTHETIC_CLASSES = ("brick", "grass", "gravel", "weave", "disc", "tissue")
SYNTHETIC_DEFAULT_CLASSES = SYNTHETIC_CLASSES[:5]
# the demo's training captions: a class-name sentence, or none
DEMO_CAPTIONS = ("template", "none")
# the autoencoder finetuning's perceptual term: LPIPS (VGG16, from local files), its stand-in on the shipped
# EfficientNet-Lite0 weights, or none; the demo has no LPIPS weights and offers the last two
AE_PERCEPTUAL = ("lpips", "effnet_lite0", "none")
DEMO_AE_PERCEPTUAL = ("effnet_lite0", "none")
