"""The captioning prompts of the reference (docs/design.md §9.1), verbatim, and the rule that picks one."""

from __future__ import annotations

PROMPTS = {
    "pd": ("Describe the visual features of image in detail with a focus on the main object, "
           "with around 60 words and maybe 4 or 5 sentences."),
    "pa": ("Be a pixel level visual defect inspector, and describe whether there is a defect or not on the "
           "main object itself, with around 60 words and maybe 4 or 5 sentences."),
    "coco": "Describe the visual features of image in detail, with around 60 words and maybe 4 or 5 sentences.",
}


def resolve_prompt(data_set: str, prompt_type: str = "pd", custom: str | None = None) -> str:
    """The prompt text of a run.

    A custom text wins; otherwise COCO always gets the ``coco`` prompt whatever ``prompt_type`` says (as the
    reference), and every other dataset gets ``PROMPTS[prompt_type]``.
    """
    if custom:
        return custom
    if prompt_type not in PROMPTS:
        raise ValueError(f"unknown prompt_type {prompt_type!r}; valid: {list(PROMPTS)} (or give a custom prompt)")
    return PROMPTS["coco"] if data_set == "coco" else PROMPTS[prompt_type]
