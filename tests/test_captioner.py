"""captioner.py and vlmdiff.captioning: caption files, resume, shards, the endpoint backend (the transformers
backend on every VLM family: test_captioner_families.py)."""

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from vlmdiff.cli import captioner
from vlmdiff.pipelines import caption as caption_stage
from vlmdiff.captioning import (PROMPTS, EndpointError, OpenAICaptioner, TemplateCaptioner, progress_path,
                                resolve_prompt, run_captioning, shard_range)
from vlmdiff.data import build_dataset, read_caption_files, read_coco_captions
from vlmdiff.data.synthetic import generate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny MVTec-layout dataset: 2 classes × (2 train, 2 test) images of 64×64."""
    return generate(tmp_path_factory.mktemp("captioner") / "d", classes=("disc", "weave"), image_size=64,
                    n_train=2, n_test_good=1, n_test_defect=1)


def _digest(image: Image.Image) -> str:
    return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()[:10]


class Interrupted(RuntimeError):
    pass


class RecordingCaptioner:
    """A fake VLM: the caption names the image's pixels, so a caption attached to the wrong image shows."""

    name, is_vlm = "fake", True

    def __init__(self, fail_after: int | None = None):
        self.fail_after, self.seen = fail_after, []

    def caption(self, images, prompt, clsnames=None):
        if self.fail_after is not None and len(self.seen) + len(images) > self.fail_after:
            raise Interrupted("killed")
        self.seen += [_digest(im) for im in images]
        return [f"{c} {_digest(im)}" for c, im in zip(clsnames, images)]


def _files(folder):
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_prompts_are_the_references():
    assert PROMPTS["pd"].startswith("Describe the visual features of image in detail with a focus on the main")
    assert PROMPTS["pa"].startswith("Be a pixel level visual defect inspector, and describe whether")
    assert PROMPTS["coco"] == ("Describe the visual features of image in detail, with around 60 words and maybe "
                               "4 or 5 sentences.")
    assert resolve_prompt("coco", "pa") == PROMPTS["coco"]  # COCO always uses its own prompt
    assert resolve_prompt("mvtec", "pa") == PROMPTS["pa"]
    assert resolve_prompt("coco", "pd", "my prompt") == "my prompt"
    with pytest.raises(ValueError, match="prompt_type"):
        resolve_prompt("mvtec", "xx")


def test_shard_range_covers_every_index_once():
    for n, shards in [(10, 3), (2, 4), (7, 1), (0, 2)]:
        covered = [i for k in range(shards) for i in range(*shard_range(n, k, shards))]
        assert covered == list(range(n))
    assert shard_range(100, 1, 2, start=10, end=30) == (20, 30)


def test_template_end_to_end(dataset, tmp_path):
    out = dataset.parent / "mvtec_captions_template_pd"
    assert captioner.main(["--data_set", "mvtec", "--data_path", str(dataset), "--backend", "template",
                           "--batch_size", "3"]) == 0
    files = _files(out)
    assert set(files) == {f"{s}_{k}_mvtec_template_0_4.json" for s in ("train", "test") for k in ("captions", "labels")}
    train = build_dataset("mvtec", dataset, "train", image_size=32)
    assert files["train_labels_mvtec_template_0_4.json"] == [r.filename for r in train.records]
    assert files["train_captions_mvtec_template_0_4.json"] == ["a photo of a disc"] * 2 + ["a photo of a weave"] * 2
    assert (out / "captioner_config.yaml").is_file()
    for split in ("train", "test"):
        ds = build_dataset("mvtec", dataset, split, image_size=32, captions=read_caption_files(out, split))
        assert [ds[i]["txt"] for i in range(len(ds))] == [f"a photo of a {r.clsname}" for r in ds.records]


def test_kill_and_resume_equals_uninterrupted(dataset, tmp_path, monkeypatch):
    def run(backend, out, *extra):
        monkeypatch.setattr(caption_stage, "build_captioner", lambda *a, **k: backend)
        return captioner.main(["--data_set", "mvtec", "--data_path", str(dataset), "--backend", "openai",
                               "--api_base", "http://unused", "--vlm_model", "fake", "--batch_size", "3",
                               "--output_dir", str(out), *extra])

    assert run(RecordingCaptioner(), tmp_path / "clean") == 0
    first = RecordingCaptioner(fail_after=3)  # dies on the second train batch
    with pytest.raises(Interrupted):
        run(first, tmp_path / "resumed")
    ckpt = progress_path(tmp_path / "resumed", "train", "mvtec", "fake", 0, 4)
    assert len(ckpt.read_text().splitlines()) == 1 + 3  # header + the first batch
    with open(ckpt, "a") as fh:
        fh.write('{"index": 3, "filena')  # a line cut by the kill
    second = RecordingCaptioner()
    assert run(second, tmp_path / "resumed") == 0
    assert _files(tmp_path / "resumed") == _files(tmp_path / "clean")
    assert not set(first.seen) & set(second.seen)  # nothing captioned twice
    assert sorted(first.seen + second.seen) == sorted(_all_digests(dataset))
    assert not ckpt.exists()
    third = RecordingCaptioner()  # a complete run is not redone
    assert run(third, tmp_path / "resumed") == 0 and third.seen == []


def _all_digests(root):
    return [_digest(Image.open(r.image)) for s in ("train", "test") for r in build_dataset("mvtec", root, s).records]


def test_two_shards_cover_every_image_once(dataset, tmp_path, monkeypatch):
    out = tmp_path / "sharded"
    args = ["--data_set", "mvtec", "--data_path", str(dataset), "--backend", "template", "--output_dir", str(out)]
    assert captioner.main(args + ["--num_shards", "2", "--shard_index", "0"]) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # the second shard takes its place from the launcher's environment
    assert captioner.main(args) == 0
    files = _files(out)
    assert "train_captions_mvtec_template_0_2.json" in files and "test_labels_mvtec_template_2_4.json" in files
    for split in ("train", "test"):
        labels = [x for name, v in sorted(files.items()) if name.startswith(f"{split}_labels") for x in v]
        assert sorted(labels) == sorted(r.filename for r in build_dataset("mvtec", dataset, split).records)
    assert {p.name for p in out.glob("*.yaml")} == {f"captioner_config_shard{k}of2.yaml" for k in (0, 1)}


class _ChatHandler(BaseHTTPRequestHandler):
    requests, fail_next = [], []

    def log_message(self, *args):
        pass

    def _answer(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(200, {"data": [{"id": "org/tiny-served"}]})

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.fail_next:
            return self._answer(self.fail_next.pop(), {"error": "busy"})
        self.requests.append((self.path, payload))
        self._answer(200, {"choices": [{"message": {"role": "assistant", "content": " a canned caption "}}]})


@pytest.fixture()
def server():
    _ChatHandler.requests, _ChatHandler.fail_next = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _ChatHandler
    httpd.shutdown()
    httpd.server_close()


def test_endpoint_backend(dataset, tmp_path, server):
    url, handler = server
    out = tmp_path / "api"
    assert captioner.main(["--data_set", "mvtec", "--data_path", str(dataset), "--backend", "openai",
                           "--api_base", url + "/v1", "--prompt_type", "pa", "--only_train_set",
                           "--max_new_tokens", "77", "--output_dir", str(out)]) == 0
    assert _files(out)["train_captions_mvtec_tiny-served_0_4.json"] == ["a canned caption"] * 4
    assert len(handler.requests) == 4
    path, payload = handler.requests[0]
    assert path == "/v1/chat/completions"
    assert payload["model"] == "org/tiny-served" and payload["max_tokens"] == 77 and payload["temperature"] == 0
    (message,) = payload["messages"]
    parts = {p["type"]: p for p in message["content"]}
    assert message["role"] == "user" and parts["text"]["text"] == PROMPTS["pa"]
    head, data = parts["image_url"]["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 64)  # native resolution


def test_endpoint_retries_then_fails_clearly(server):
    url, handler = server
    api = OpenAICaptioner(url, "m", retries=2, backoff=0.0)
    handler.fail_next = [503, 429]  # transient: retried
    assert api.caption([Image.new("RGB", (8, 8))], "p") == ["a canned caption"]
    handler.fail_next = [400]  # a client error is not retried
    with pytest.raises(EndpointError, match="HTTP 400"):
        api.caption([Image.new("RGB", (8, 8))], "p")
    with pytest.raises(EndpointError, match="after 2 attempt"):
        OpenAICaptioner("http://127.0.0.1:9", "m", retries=1, backoff=0.0, timeout=2).caption(
            [Image.new("RGB", (8, 8))], "p")


def test_template_refuses_to_guess():
    with pytest.raises(ValueError, match="class name"):
        TemplateCaptioner().caption([None], "p")


def test_missing_model_folder_is_an_error(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        captioner.main(["--data_set", "mvtec", "--data_path", str(dataset), "--model_path", str(tmp_path / "none"),
                        "--output_dir", str(tmp_path / "o")])


def _coco(root):
    """A COCO-AD layout with two train and one test image (``meta_20_0.json``)."""
    items = {"train": ["train2017/000000000009.jpg", "train2017/000000000025.jpg"],
             "test": ["val2017/000000000139.jpg"]}
    for paths in items.values():
        for p in paths:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (10, 20, 30)).save(root / p)
    meta = {s: {"coco": [{"img_path": p, "anomaly": 0, "mask_path": ""} for p in ps]} for s, ps in items.items()}
    (root / "meta_20_0.json").write_text(json.dumps(meta))
    return root


def test_coco_writes_annotations(tmp_path):
    root = _coco(tmp_path / "coco")
    assert captioner.main(["--data_set", "coco", "--data_path", str(root), "--backend", "template"]) == 0
    assert (tmp_path / "coco_captions_template_pd" / "train_captions_coco_template_0_2.json").is_file()
    ann = json.loads((root / "annotations" / "captions_train2017_template.json").read_text())
    assert ann == {"annotations": [{"id": 0, "image_id": 9, "caption": "a photo of a coco"},
                                   {"id": 1, "image_id": 25, "caption": "a photo of a coco"}]}
    test = build_dataset("coco", root, "test", image_size=16,
                         captions=read_coco_captions(root / "annotations" / "captions_val2017_template.json"))
    assert test[0]["txt"] == "a photo of a coco"


def test_resume_refuses_progress_of_another_prompt(dataset, tmp_path):
    records = build_dataset("mvtec", dataset, "train").records
    with pytest.raises(Interrupted):
        run_captioning(records, RecordingCaptioner(fail_after=1), "prompt A", tmp_path, "train", "mvtec", "fake",
                       batch_size=1, progress=False)
    with pytest.raises(ValueError, match="different run"):
        run_captioning(records, RecordingCaptioner(), "prompt B", tmp_path, "train", "mvtec", "fake", progress=False)
    result = run_captioning(records, RecordingCaptioner(), "prompt B", tmp_path, "train", "mvtec", "fake",
                            resume=False, progress=False)
    assert (result.captioned, result.resumed) == (4, 0)
