"""The transformers captioning backend on every supported VLM family (tiny random models, built offline).

Per family (BLIP-2 with T5 and with OPT, InternVL ``-hf``, DeepSeek-VL, Qwen2-VL, Qwen2.5-VL, LLaVA): the
folder loads, a batch of three images of different sizes gets clean captions equal to one-at-a-time
captioning, and ``captioner.py --backend transformers`` writes the caption files the loaders read. The
models (tests/vlm_families.py) only ever generate single visible characters and their captions depend on
the image, so a caption of exactly ``max_new_tokens`` characters without white space is a clean one, and a
batch / one-at-a-time mix-up shows.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from vlmdiff.cli import captioner
from tests.vlm_families import FAMILIES
from vlmdiff.captioning import PROMPTS, TransformersCaptioner, build_captioner
from vlmdiff.data import build_dataset, read_caption_files
from vlmdiff.data.synthetic import generate

NEW_TOKENS = 5


@pytest.fixture(scope="session")
def vlm_folder(tmp_path_factory):
    """``vlm_folder(family)``: the family's tiny model folder, built once per test session."""
    built = {}

    def get(family):
        if family not in built:
            built[family] = FAMILIES[family](tmp_path_factory.mktemp("vlm") / f"tiny-{family}")
        return built[family]

    return get


def sample_images() -> list[Image.Image]:
    """Three images of different sizes and content: a red ramp, a blue checkerboard, green noise."""
    ramp = np.zeros((30, 40, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]
    checker = np.zeros((64, 64, 3), np.uint8)
    checker[..., 2] = ((np.arange(64)[:, None] // 8 + np.arange(64)[None, :] // 8) % 2) * 255
    noise = np.zeros((57, 23, 3), np.uint8)
    noise[..., 1] = np.random.default_rng(0).integers(0, 256, (57, 23), dtype=np.uint8)
    return [Image.fromarray(a) for a in (ramp, checker, noise)]


def assert_clean(captions, backend, n_chars=NEW_TOKENS):
    """Exactly the generated characters: no prompt echo, no template or special-token text, no blanks."""
    tok = backend.tokenizer
    specials = set(tok.all_special_tokens) | {str(t) for t in tok.added_tokens_decoder.values()}
    for c in captions:
        assert isinstance(c, str) and len(c) == n_chars and not any(ch.isspace() for ch in c), repr(c)
        assert not any(s in c for s in specials), repr(c)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_captions_batch_equals_one_at_a_time(family, vlm_folder):
    backend = TransformersCaptioner(vlm_folder(family), device="cpu", dtype="float32", max_new_tokens=NEW_TOKENS)
    images = sample_images()
    for prompt in ("Describe the image.", PROMPTS["pd"]):
        batch = backend.caption(images, prompt)
        assert_clean(batch, backend)
        assert len(set(batch)) > 1, f"{family}: captions do not depend on the image, {batch}"
        assert batch == [backend.caption([im], prompt)[0] for im in images]
    assert backend.caption([], "x") == []


def _mixed_size_dataset(root):
    """A 2-class MVTec layout (2 train, 2 test images per class), the second class's train images resized."""
    root = generate(root, classes=("disc", "weave"), image_size=64, n_train=2, n_test_good=1, n_test_defect=1)
    for i, p in enumerate(sorted((root / "weave" / "train" / "good").glob("*.png"))):
        Image.open(p).resize((48 + 8 * i, 40)).save(p)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _mixed_size_dataset(tmp_path_factory.mktemp("families") / "mvtec")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_captioner_cli(family, vlm_folder, dataset, tmp_path):
    folder = vlm_folder(family)
    out = tmp_path / "captions"
    assert captioner.main(["--data_set", "mvtec", "--data_path", str(dataset), "--backend", "transformers",
                           "--model_path", str(folder), "--device", "cpu", "--dtype", "float32",
                           "--max_new_tokens", str(NEW_TOKENS), "--batch_size", "3", "--output_dir", str(out)]) == 0
    vlm = folder.name.lower()
    backend = build_captioner("transformers", model_path=str(folder), dtype="float32", max_new_tokens=NEW_TOKENS)
    for split in ("train", "test"):
        records = build_dataset("mvtec", dataset, split).records
        captions = json.loads((out / f"{split}_captions_mvtec_{vlm}_0_4.json").read_text())
        assert json.loads((out / f"{split}_labels_mvtec_{vlm}_0_4.json").read_text()) == [r.filename for r in records]
        assert_clean(captions, backend)
        alone = [backend.caption([Image.open(r.image).convert("RGB")], PROMPTS["pd"])[0] for r in records]
        assert captions == alone  # batches of 3 + 1, mixed sizes in the train split
        ds = build_dataset("mvtec", dataset, split, image_size=32, captions=read_caption_files(out, split))
        assert [ds[i]["txt"] for i in range(len(ds))] == captions


def test_remote_code_folder_says_so(tmp_path):
    folder = tmp_path / "InternVL2-8B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "internvl_chat", "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"}}))
    with pytest.raises(ValueError, match=r"InternVL2-8B: model type 'internvl_chat' .*--trust_remote_code"):
        TransformersCaptioner(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "no_such_vlm"}))
    with pytest.raises(ValueError, match="'no_such_vlm' is unknown to transformers") as err:
        TransformersCaptioner(folder)
    assert "trust_remote_code" not in str(err.value)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        TransformersCaptioner(folder)


def test_broken_native_folder_keeps_the_real_error(vlm_folder, tmp_path):
    folder = shutil.copytree(vlm_folder("qwen2-vl"), tmp_path / "tiny-qwen2-vl")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError) as err:
        TransformersCaptioner(folder)
    message = str(err.value)
    assert message.startswith(f"{folder}: cannot load") and "\n" not in message
    assert "no file named model.safetensors" in message and "trust_remote_code" not in message


def test_t5_pad_id_zero_is_passed_as_is(vlm_folder, monkeypatch):
    backend = TransformersCaptioner(vlm_folder("blip2-t5"), dtype="float32", max_new_tokens=2)
    seen, generate = {}, backend.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    monkeypatch.setattr(backend.model, "generate", spy)
    backend.caption(sample_images()[:1], "Describe the image.")
    assert backend.encoder_decoder and backend.tokenizer.pad_token_id == 0 and seen["pad_token_id"] == 0
