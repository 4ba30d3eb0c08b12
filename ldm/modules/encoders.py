"""The frozen CLIP ViT-L/14 text encoder that turns captions into cross-attention tokens (docs/design.md §3.6).

Built on ``transformers.CLIPTextModel`` from a config — never from a hub name; its weights come from the
assembled checkpoint. The state-dict keys keep the layout of SD-1.x files and of the reference
(``transformer.text_model.{embeddings,encoder,final_layer_norm}``, with a persistent
``embeddings.position_ids`` buffer) whatever the installed transformers version calls them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from ldm.modules.clip_tokenizer import CLIPBPETokenizer

# CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14).
VIT_L14_TEXT = dict(vocab_size=49408, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=77, hidden_act="quick_gelu",
                    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
LAYERS = ("last",)


def _text_config(version: str | os.PathLike | None, text_config: Mapping | None) -> CLIPTextConfig:
    if version is not None and Path(version).is_dir():
        return CLIPTextConfig.from_pretrained(str(version), local_files_only=True)
    if version is not None and version != "openai/clip-vit-large-patch14":
        raise FileNotFoundError(f"{version}: not a local CLIP folder (nothing is downloaded; give a folder path "
                                "or leave `version` unset for CLIP ViT-L/14's architecture)")
    return CLIPTextConfig(**{**VIT_L14_TEXT, **dict(text_config or {})})


class FrozenCLIPEmbedder(nn.Module):
    """Captions → ``(B, 77, D)`` tokens (``last_hidden_state``, after the final LayerNorm, no attention mask).

    Args:
        version: optional local CLIP folder (config.json, vocab.json, merges.txt); a hub name is refused
            except ``openai/clip-vit-large-patch14``, which only selects the default architecture.
        text_config: ``CLIPTextConfig`` fields overriding the ViT-L/14 text tower (small test models).
        max_length: token sequence length (77).
        freeze: no gradients, and the module stays in eval mode.
    """

    def __init__(self, version: str | os.PathLike | None = None, *, text_config: Mapping | None = None,
                 max_length: int = 77, layer: str = "last", freeze: bool = True, device: str | None = None,
                 load_pretrained: bool = False):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        config = _text_config(version, text_config)
        config._attn_implementation = "sdpa"
        folder = Path(version) if version is not None and Path(version).is_dir() else None
        if load_pretrained and folder is not None:
            model = CLIPTextModel.from_pretrained(str(folder), local_files_only=True)
        else:
            model = CLIPTextModel(config)
        self.transformer = nn.Module()
        # transformers < 5 nests the tower under `.text_model`; 5.x does not. Keep the SD key layout.
        self.transformer.text_model = getattr(model, "text_model", model)
        embeddings = self.transformer.text_model.embeddings
        embeddings.register_buffer("position_ids", embeddings.position_ids, persistent=True)
        has_vocab = folder is not None and (folder / "vocab.json").is_file()
        self.tokenizer = CLIPBPETokenizer(folder if has_vocab else None)
        self.max_length = max_length
        self.freeze = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True):
        return super().train(False if self.freeze else mode)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``(B, max_length)`` int64 token ids on the module's device."""
        return self.tokenizer(list(texts), self.max_length).to(self.transformer.text_model.embeddings.position_ids.device)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        return self.transformer.text_model(input_ids=tokens).last_hidden_state

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self(texts)
