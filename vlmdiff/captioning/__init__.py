"""Captioning of dataset images with a VLM (docs/design.md §9): prompts, backends, a sharded resumable runner.

* :mod:`~vlmdiff.captioning.prompts`: the reference's ``pd`` / ``pa`` / ``coco`` prompts, verbatim.
* :mod:`~vlmdiff.captioning.backends`: ``transformers`` (a local image-text-to-text folder), ``openai`` (an
  OpenAI-compatible chat endpoint: vLLM, lmdeploy, SGLang) and ``template`` (class-name sentences, no VLM).
* :mod:`~vlmdiff.captioning.runner`: :func:`run_captioning` writes the reference's caption files.
"""

from vlmdiff.captioning.backends import (BACKENDS, DTYPES, Captioner, EndpointError, OpenAICaptioner,
                                         TemplateCaptioner, TransformersCaptioner, build_captioner)
from vlmdiff.captioning.prompts import PROMPTS, resolve_prompt
from vlmdiff.captioning.runner import (ShardResult, progress_path, run_captioning, shard_range,
                                       write_coco_annotations)

__all__ = ["BACKENDS", "DTYPES", "PROMPTS", "Captioner", "EndpointError", "OpenAICaptioner", "ShardResult",
           "TemplateCaptioner", "TransformersCaptioner", "build_captioner", "progress_path", "resolve_prompt",
           "run_captioning", "shard_range", "write_coco_annotations"]
