"""Captioning of dataset images with a VLM (docs/design.md §9): prompts, backends, a sharded resumable runner.

* :mod:`~vlmdiff.captioning.prompts`: the reference's ``pd`` / ``pa`` / ``coco`` prompts, verbatim.
* :mod:`~vlmdiff.captioning.backends`: ``transformers`` (a local image-text-to-text folder), ``openai`` (an
  OpenAI-compatible chat endpoint: vLLM, lmdeploy, SGLang) and ``template`` (class-name sentences, no VLM).
* :mod:`~vlmdiff.captioning.runner`: :func:`run_captioning` writes the reference's caption files.

The names below load their submodule on first use: the prompts and backends import without torch.
"""

from utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "backends": ["BACKENDS", "DTYPES", "Captioner", "EndpointError", "OpenAICaptioner", "TemplateCaptioner",
                 "TransformersCaptioner", "build_captioner"],
    "prompts": ["PROMPTS", "resolve_prompt"],
    "runner": ["ShardResult", "progress_path", "run_captioning", "shard_range", "write_coco_annotations"],
})
