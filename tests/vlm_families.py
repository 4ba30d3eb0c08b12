"""Tiny random models of the VLM families the transformers captioning backend supports, built offline.

Each builder writes a folder laid out as the family's real checkpoint is (``save_pretrained`` of the
family's own model, image processor, processor and tokenizer classes; the chat template where the real
checkpoint has one) with 1-layer, 16-32 wide random weights. The tokenizers are built from a generated
vocabulary (single characters plus the words of the captioning prompts and chat templates), so no file is
ever downloaded.

The models are built so that the captioning tests can fail: captions depend on the image (many image
tokens, few text tokens, weights at a scale where attention is not uniform) and consist of single visible
characters only (every other output row is zero, so a word, a special or a white-space token is never
generated), so any prompt, template or special-token text in a caption comes from the decoding.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import torch

from vlmdiff.captioning.prompts import PROMPTS

CHARS = string.ascii_letters + string.digits + " .,:;!?'\"-_()[]<>/|=\n"
BYTE_LEVEL = {" ": "Ġ", "\n": "Ċ"}  # how GPT-2 style byte-level vocabularies spell space and newline
WORDS = sorted(set(re.findall(r"[A-Za-z]+", " ".join(PROMPTS.values()) + " Describe the image user assistant "
                                            "system User Assistant USER ASSISTANT")))


def _word_merges(space: str) -> tuple[list[str], list[tuple[str, str]]]:
    """BPE pieces and merges that make ``space + word`` one token for every word of :data:`WORDS`.

    Every merge extends a piece that starts with ``space``, so merges of different words never compete.
    """
    pieces, merges = [], []
    for word in WORDS:
        piece = space
        for c in word:
            merges.append((piece, c))
            piece += c
            pieces.append(piece)
    return list(dict.fromkeys(pieces)), list(dict.fromkeys(merges))


def _byte_level_vocab(specials: list[str], offset: int = 0) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (characters of :data:`CHARS`, whole words, ``specials``) and its merges."""
    symbols = [BYTE_LEVEL.get(c, c) for c in CHARS]
    pieces, merges = _word_merges(BYTE_LEVEL[" "])
    vocab = {t: offset + i for i, t in enumerate(symbols + pieces + specials)}
    return vocab, merges


def _qwen2_tokenizer(specials: list[str], extra: dict[str, str] | None = None):
    """A byte-level Qwen2 tokenizer with ``specials`` as special tokens."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_level_vocab(["<|endoftext|>"] + specials)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=extra or {})
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def _gpt2_tokenizer():
    """A byte-level GPT-2 tokenizer as OPT's: ids 0 / 1 / 2 = ``<unk>`` / ``<pad>`` / ``</s>`` (bos and eos)."""
    from transformers import GPT2Tokenizer

    vocab, merges = _byte_level_vocab([], offset=3)
    vocab.update({"<unk>": 0, "<pad>": 1, "</s>": 2})
    return GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                         pad_token="<pad>")


def _llama_tokenizer(specials: list[str], extra: dict[str, str] | None = None, **kwargs):
    """A LLaMA-style (SentencePiece BPE, ``▁`` for space) tokenizer with ``specials`` as special tokens."""
    from transformers import LlamaTokenizer

    pieces, merges = _word_merges("▁")
    symbols = ["<unk>", "<s>", "</s>", "▁"] + [c for c in CHARS if c != " "] + pieces
    tok = LlamaTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(symbols))}, merges=merges,
                         extra_special_tokens=extra or {}, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def _t5_tokenizer():
    """A T5 (unigram) tokenizer: ids 0 / 1 / 2 = pad / eos / unk as in T5, characters and whole words."""
    from transformers import T5Tokenizer

    pieces, _ = _word_merges("▁")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -1.0) for c in CHARS if c != " "] + [(p, -1.0) for p in pieces]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _save(model, processor, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _randomize(model, tokenizer) -> None:
    """Re-draw every weight matrix with std ``1 / sqrt(fan_in)`` (seeded); only single visible characters
    can be generated.

    The library's initialisation (std 0.02, or 1e-10 for BLIP-2's vision tower) leaves a 1-layer model's
    attention uniform and its output dominated by the last token's embedding, so every image would get the
    same caption. The input embeddings are scaled down (the residual stream is then the attention's mix of
    image and text tokens). Every output row but those of the single visible characters is zeroed (logit 0,
    below the best of ~80 random logits): no word, special or white-space token is ever generated, so a
    caption is never cut short by an end-of-sequence token and has ``max_new_tokens`` characters.
    """
    g = torch.Generator().manual_seed(1)
    visible = {c for c in CHARS if not c.isspace()}
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    allowed = [i for t, i in tokenizer.get_vocab().items() if t in visible and i not in special]
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        model.get_input_embeddings().weight.mul_(0.1)
        head = model.get_output_embeddings().weight
        keep = head[allowed].clone()
        head.zero_()
        head[allowed] = keep


# ---------------------------------------------------------------------------------------------------------
# families


def blip2_t5(folder: Path) -> Path:
    """BLIP-2 with a T5 encoder-decoder (as Salesforce/blip2-flan-t5-xxl): no chat template."""
    from transformers import Blip2Processor, BlipImageProcessor, T5Config

    tok = _t5_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 16, "width": 16}), tok, num_query_tokens=32)
    text = T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                    num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return _save(_blip2(text, tok, processor), processor, folder)


def blip2_opt(folder: Path) -> Path:
    """BLIP-2 with an OPT decoder (as Salesforce/blip2-opt-2.7b): no chat template."""
    from transformers import Blip2Processor, BlipImageProcessor, OPTConfig

    tok = _gpt2_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 16, "width": 16}), tok, num_query_tokens=32)
    text = OPTConfig(vocab_size=len(tok), hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                     word_embed_proj_dim=16, max_position_embeddings=512, pad_token_id=1, bos_token_id=2,
                     eos_token_id=2)
    return _save(_blip2(text, tok, processor), processor, folder)


def _blip2(text_config, tok, processor):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig

    vision = Blip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=16, patch_size=8, initializer_range=0.02)
    qformer = Blip2QFormerConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, encoder_hidden_size=16, cross_attention_frequency=1)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text_config, num_query_tokens=32,
                         image_token_index=tok.convert_tokens_to_ids(processor.image_token.content
                                                                     if hasattr(processor.image_token, "content")
                                                                     else processor.image_token))
    config.text_config.vocab_size = len(tok)
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config)
    _randomize(model, tok)
    return model


QWEN_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                 "<|video_pad|>"]


def _qwen_vl(folder: Path, version: str) -> Path:
    from transformers import Qwen2VLImageProcessor

    tok = _qwen2_tokenizer(QWEN_SPECIALS)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    image_processor = Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2,
                                            size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64})
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=tok.pad_token_id)
    common = dict(text_config=text, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if version == "2":
        from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor,
                                  Qwen2VLVideoProcessor)
        vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=4,
                      spatial_merge_size=2, temporal_patch_size=2)
        config, model_cls = Qwen2VLConfig(vision_config=vision, **common), Qwen2VLForConditionalGeneration
        processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT,
                                     video_processor=Qwen2VLVideoProcessor(patch_size=4, merge_size=2))
    else:
        from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                                  Qwen2VLVideoProcessor)
        vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=4, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=16, out_hidden_size=32, fullatt_block_indexes=[0])
        config, model_cls = Qwen2_5_VLConfig(vision_config=vision, **common), Qwen2_5_VLForConditionalGeneration
        processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT,
                                        video_processor=Qwen2VLVideoProcessor(patch_size=4, merge_size=2))
    torch.manual_seed(0)
    model = model_cls(config)
    _randomize(model, tok)
    return _save(model, processor, folder)


def qwen2_vl(folder: Path) -> Path:
    """Qwen2-VL (as Qwen/Qwen2-VL-2B-Instruct): dynamic resolution, ChatML template."""
    return _qwen_vl(folder, "2")


def qwen2_5_vl(folder: Path) -> Path:
    """Qwen2.5-VL (as Qwen/Qwen2.5-VL-3B-Instruct): windowed vision attention, ChatML template."""
    return _qwen_vl(folder, "2.5")


INTERNVL_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<IMG_CONTEXT>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def internvl_hf(folder: Path) -> Path:
    """InternVL in the transformers-native ``-hf`` format (as OpenGVLab/InternVL3-1B-hf): tiles per image."""
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    specials = ["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = _qwen2_tokenizer(specials, extra={"start_image_token": "<img>", "end_image_token": "</img>",
                                            "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    image_processor = GotOcr2ImageProcessor(size={"height": 16, "width": 16}, crop_to_patches=True, min_patches=1,
                                            max_patches=4)
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=16,
                                  video_processor=InternVLVideoProcessor(size={"height": 16, "width": 16}),
                                  chat_template=INTERNVL_CHAT)
    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  image_size=[16, 16], patch_size=[2, 2])
    text = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
    config = InternVLConfig(vision_config=vision, text_config=text, image_seq_length=16,
                            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(config)
    _randomize(model, tok)
    return _save(model, processor, folder)


DEEPSEEK_CHAT = (
    "{% for m in messages %}{% if m['role'] == 'user' %}User: {% else %}Assistant: {% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image_placeholder>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


def deepseek_vl(folder: Path) -> Path:
    """DeepSeek-VL, transformers-native (as deepseek-community/deepseek-vl-1.3b-chat): SigLIP + LLaMA."""
    from transformers import DeepseekVLConfig, DeepseekVLForConditionalGeneration, DeepseekVLProcessor
    from transformers.models.deepseek_vl.image_processing_deepseek_vl import DeepseekVLImageProcessor

    tok = _llama_tokenizer(["<image_placeholder>"], extra={"image_token": "<image_placeholder>"},
                           pad_token="<unk>")
    processor = DeepseekVLProcessor(DeepseekVLImageProcessor(size={"height": 32, "width": 32}, min_size=4), tok,
                                    chat_template=DEEPSEEK_CHAT, num_image_tokens=64)
    vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=4)
    text = dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1,
                eos_token_id=2, pad_token_id=0)
    config = DeepseekVLConfig(vision_config=vision, text_config=text,
                              image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"))
    torch.manual_seed(0)
    model = DeepseekVLForConditionalGeneration(config)
    _randomize(model, tok)
    return _save(model, processor, folder)


LLAVA_CHAT = ("{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
              "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
              "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def llava(folder: Path) -> Path:
    """LLaVA (as llava-hf/llava-1.5-7b-hf): CLIP ViT + LLaMA."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = _llama_tokenizer(["<image>"], extra={"image_token": "<image>"}, pad_token="<unk>")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=4, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_CHAT)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=4, projection_dim=16)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    _randomize(model, tok)
    return _save(model, processor, folder)


FAMILIES = {"blip2-t5": blip2_t5, "blip2-opt": blip2_opt, "internvl-hf": internvl_hf, "deepseek-vl": deepseek_vl,
            "qwen2-vl": qwen2_vl, "qwen2.5-vl": qwen2_5_vl, "llava": llava}
