"""CLIP tokenizer and frozen text encoder against the reference (golden ``tokens.json``, ``text.safetensors``)."""

import json

import pytest
import torch

from ldm.modules.clip_tokenizer import CLIPBPETokenizer
from ldm.modules.encoders import FrozenCLIPEmbedder
from tests.conftest import GOLDEN, assert_close, sub_state_dict


@pytest.fixture(scope="module")
def tokens():
    return json.loads((GOLDEN / "tokens.json").read_text())


@pytest.fixture(scope="module")
def embedder(tiny_params, tiny_state_dict):
    model = FrozenCLIPEmbedder(**tiny_params["cond_stage_config"]["params"])
    model.load_state_dict(sub_state_dict(tiny_state_dict, "cond_stage_model."), strict=True)
    return model


def test_token_ids_equal_the_reference_tokenizer(tokens):
    tok = CLIPBPETokenizer()
    ids = tok(tokens["captions"])
    for i, caption in enumerate(tokens["captions"]):
        assert ids[i].tolist() == tokens["input_ids"][i], f"caption {i}: {caption!r}"
        assert [tok.bos_id, *tok.encode(caption), tok.eos_id] == tokens["untruncated_input_ids"][i]
    assert tok("a photo of a cat")[0].tolist() == tokens["check_a_photo_of_a_cat"]


def test_cleaning_is_ftfy_only_like_the_reference():
    """ftfy unescapes HTML only when the text has no '<'; no extra unescaping as open_clip's tokenizer does."""
    tok = CLIPBPETokenizer()
    assert tok.encode("x < y &amp; z") != tok.encode("x < y & z")
    assert tok.encode("x &amp; z") == tok.encode("x & z")


def test_padding_uses_end_of_text_and_truncation_keeps_it(tokens):
    tok = CLIPBPETokenizer()
    assert tok([""])[0].tolist() == [49406] + [49407] * 76
    long = tok(["word " * 200])[0]
    assert long[-1].item() == 49407 and long[-2].item() != 49407


def test_text_encoder_output(embedder, golden):
    g = golden("text")
    assert torch.equal(embedder.tokenize(json.loads((GOLDEN / "tokens.json").read_text())["captions"]),
                       g["text.input_ids"])
    with torch.no_grad():
        out = embedder.transformer.text_model(input_ids=g["text.input_ids"]).last_hidden_state
    assert_close(out, g["text.last_hidden_state"], name="last_hidden_state")


def test_state_dict_keeps_the_sd_key_layout(embedder):
    keys = list(embedder.state_dict())
    assert keys[0] == "transformer.text_model.embeddings.position_ids"
    assert all(k.startswith("transformer.text_model.") for k in keys)
    assert embedder.state_dict()["transformer.text_model.embeddings.position_ids"].dtype == torch.int64


def test_embedder_is_frozen(embedder):
    embedder.train()
    assert not embedder.training
    assert not any(p.requires_grad for p in embedder.parameters())


def test_hub_names_are_refused():
    with pytest.raises(FileNotFoundError, match="not a local CLIP folder"):
        FrozenCLIPEmbedder("someone/clip-model")
