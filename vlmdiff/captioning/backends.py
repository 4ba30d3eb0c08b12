"""Captioning backends: one interface, ``caption(images, prompt, clsnames=None) -> list[str]``.

* :class:`TransformersCaptioner`: any image-text-to-text model folder given by a local path
  (``AutoProcessor`` + ``AutoModelForImageTextToText``), batched greedy generation.
* :class:`OpenAICaptioner`: an OpenAI-compatible ``/v1/chat/completions`` endpoint (what vLLM, lmdeploy and
  SGLang serve); the images of a batch are sent as concurrent requests so the server can batch them.
* :class:`TemplateCaptioner`: ``"a photo of a {clsname}"`` sentences. **Not a VLM**: it never looks at the
  image; it exists for runs without any VLM (the CPU demo, smoke tests).

Images arrive at their native resolution; resizing is the model's processor's (or the server's) job.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Sequence

from PIL import Image

log = logging.getLogger(__name__)


class Captioner(Protocol):
    name: str
    is_vlm: bool

    def caption(self, images: Sequence[Image.Image], prompt: str,
                clsnames: Sequence[str] | None = None) -> list[str]:
        """One caption per image; ``clsnames`` (the images' class names) is used by non-VLM backends only."""


class TemplateCaptioner:
    """Class-name sentences, ``template.format(clsname=...)`` with ``_`` read as a space. Not a VLM."""

    name = "template"
    is_vlm = False

    def __init__(self, template: str = "a photo of a {clsname}"):
        if "{clsname}" not in template:
            raise ValueError(f"template must contain '{{clsname}}', got {template!r}")
        self.template = template

    def caption(self, images, prompt, clsnames=None):
        if clsnames is None or len(clsnames) != len(images):
            raise ValueError("the template captioner needs one class name per image")
        return [self.template.format(clsname=c.replace("_", " ")) for c in clsnames]


# ---------------------------------------------------------------------------------------------------------
# transformers


DTYPES = ("auto", "float32", "float16", "bfloat16")


class TransformersCaptioner:
    """A local image-text-to-text model folder; greedy decoding of ``max_new_tokens`` tokens.

    Args:
        model_path: a local folder (``save_pretrained`` layout); nothing is ever downloaded.
        device: torch device the model runs on, e.g. ``"cuda:0"`` or ``"cpu"``.
        dtype: one of ``auto``, ``float32``, ``float16``, ``bfloat16``.
        max_new_tokens: generation length limit.
        trust_remote_code: allow the folder's own modelling code (models not native to transformers).
    """

    is_vlm = True

    def __init__(self, model_path: str | Path, *, device: str = "cpu", dtype: str = "auto",
                 max_new_tokens: int = 1024, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: model folder not found (give a local folder; nothing is downloaded)")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {list(DTYPES)}")
        self.name = path.name
        self.max_new_tokens = max_new_tokens
        kwargs = dict(local_files_only=True, trust_remote_code=trust_remote_code)
        try:
            self.processor = AutoProcessor.from_pretrained(path, **kwargs)
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=dtype if dtype == "auto" else getattr(torch, dtype), **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: cannot load an image-text-to-text model and its processor ({err}); "
                             "models with custom code need --trust_remote_code") from err
        self.model.to(device).eval()
        self.encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and not self.encoder_decoder:
            tokenizer.padding_side = "left"  # batched generation of a decoder-only model continues on the right
        self.tokenizer = tokenizer

    def _text(self, prompt: str) -> str:
        """The prompt in the model's chat format (with its image placeholder)."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = getattr(self.processor, "image_token", None)
        return f"{image_token}\n{prompt}" if image_token else prompt

    def caption(self, images, prompt, clsnames=None):
        import torch

        text = self._text(prompt)
        inputs = self.processor(images=list(images), text=[text] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        for k, v in inputs.items():  # pixel values in the model's dtype, ids untouched
            if torch.is_floating_point(v):
                inputs[k] = v.to(self.model.dtype)
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or getattr(self.tokenizer, "eos_token_id", None)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=pad_id)
        ids = inputs.get("input_ids")
        n = ids.shape[1] if ids is not None else 0
        if ids is not None and out.shape[1] >= n and torch.equal(out[:, :n].to(ids), ids):
            out = out[:, n:]  # decoder-only models return the prompt too
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint


def image_data_url(image: Image.Image) -> str:
    """A lossless PNG ``data:`` URL of ``image`` (native resolution)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class EndpointError(RuntimeError):
    """The endpoint did not answer with a usable completion."""


class OpenAICaptioner:
    """Chat completions of an OpenAI-compatible server, one request per image, ``temperature 0``.

    Args:
        api_base: server root, e.g. ``http://127.0.0.1:23333`` (a trailing ``/v1`` is accepted).
        model: served model name; None asks the server (``GET /v1/models``) and takes the first.
        max_tokens: completion length limit.
        timeout: seconds per request.
        retries: further attempts after a connection error, a timeout, HTTP 429 or 5xx (exponential backoff).
        concurrency: requests in flight at once (the server batches them).
        api_key: sent as ``Authorization: Bearer``; None sends none.
    """

    is_vlm = True

    def __init__(self, api_base: str, model: str | None = None, *, max_tokens: int = 1024, timeout: float = 120.0,
                 retries: int = 3, concurrency: int = 8, api_key: str | None = None, backoff: float = 1.0):
        if not api_base.startswith(("http://", "https://")):
            raise ValueError(f"api_base must be an http(s) URL, got {api_base!r}")
        base = api_base.rstrip("/")
        self.base = base[:-3] if base.endswith("/v1") else base
        self.max_tokens, self.timeout, self.retries = max_tokens, timeout, retries
        self.concurrency, self.api_key, self.backoff = max(1, concurrency), api_key, backoff
        self.model = model or self._served_model()
        self.name = self.model.rstrip("/").split("/")[-1]

    def _request(self, path: str, payload: dict | None = None) -> dict:
        url = f"{self.base}{path}"
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                body = err.read().decode("utf-8", "replace")[:500]
                last = f"HTTP {err.code}: {body}"
                if err.code != 429 and err.code < 500:
                    break  # a client error does not get better by retrying
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except json.JSONDecodeError as err:
                raise EndpointError(f"{url}: answer is not JSON ({err})") from err
            log.warning("%s: attempt %d/%d failed (%s)", url, attempt + 1, self.retries + 1, last)
        raise EndpointError(f"{url}: request failed after {attempt + 1} attempt(s): {last}")

    def _served_model(self) -> str:
        answer = self._request("/v1/models")
        try:
            return str(answer["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as err:
            raise EndpointError(f"{self.base}/v1/models: no served model in {str(answer)[:200]!r}; "
                                "give the model name") from err

    def payload(self, image: Image.Image, prompt: str) -> dict:
        content = [{"type": "text", "text": prompt},
                   {"type": "image_url", "image_url": {"url": image_data_url(image)}}]
        return {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens, "temperature": 0}

    def _one(self, image: Image.Image, prompt: str) -> str:
        answer = self._request("/v1/chat/completions", self.payload(image, prompt))
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise EndpointError(f"{self.base}/v1/chat/completions: no completion in {str(answer)[:200]!r}") from err
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content).strip()

    def caption(self, images, prompt, clsnames=None):
        if len(images) <= 1 or self.concurrency == 1:
            return [self._one(im, prompt) for im in images]
        with ThreadPoolExecutor(min(self.concurrency, len(images))) as pool:
            return list(pool.map(lambda im: self._one(im, prompt), images))


BACKENDS = ("transformers", "openai", "template")


def build_captioner(backend: str, *, model_path: str | None = None, api_base: str | None = None,
                    api_model: str | None = None, api_key: str | None = None, device: str = "cpu",
                    dtype: str = "auto", max_new_tokens: int = 1024, trust_remote_code: bool = False,
                    timeout: float = 120.0, retries: int = 3, concurrency: int = 8) -> Captioner:
    """The backend named ``backend`` (one of :data:`BACKENDS`), its arguments checked up front."""
    if backend == "template":
        log.warning("template captioner: captions are class-name sentences, not VLM descriptions")
        return TemplateCaptioner()
    if backend == "transformers":
        if not model_path:
            raise ValueError("the transformers backend needs model_path (a local model folder); "
                             "use the template backend for class-name captions without a VLM")
        return TransformersCaptioner(model_path, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                                     trust_remote_code=trust_remote_code)
    if backend == "openai":
        if not api_base:
            raise ValueError("the openai backend needs api_base (e.g. http://127.0.0.1:23333)")
        return OpenAICaptioner(api_base, api_model, max_tokens=max_new_tokens, timeout=timeout, retries=retries,
                               concurrency=concurrency, api_key=api_key)
    raise ValueError(f"unknown captioning backend {backend!r}; valid: {list(BACKENDS)}")
