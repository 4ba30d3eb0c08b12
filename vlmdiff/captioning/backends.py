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
        check_model_folder(path, trust_remote_code)
        self.name = path.name
        self.max_new_tokens = max_new_tokens
        kwargs = dict(local_files_only=True, trust_remote_code=trust_remote_code)
        try:
            self.processor = AutoProcessor.from_pretrained(path, **kwargs)
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=dtype if dtype == "auto" else getattr(torch, dtype), **kwargs)
        except ImportError as err:
            raise ImportError(f"{path}: a package the model or its processor needs is missing: "
                              f"{_one_line(err)}") from err
        except Exception as err:  # the library's own message, on one line, with the folder
            raise ValueError(f"{path}: cannot load an image-text-to-text model and its processor: "
                             f"{type(err).__name__}: {_one_line(err)}") from err
        self.model.to(device).eval()
        self.encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and not self.encoder_decoder:
            tokenizer.padding_side = "left"  # batched generation of a decoder-only model continues on the right
        self.tokenizer = tokenizer
        self._texts: dict[str, str] = {}

    def _text(self, prompt: str, image: Image.Image) -> str:
        """The prompt as the model's processor expects it.

        With a chat template (instruction-tuned models): one user turn of an image and the prompt, then the
        assistant's turn opened. Without one (e.g. BLIP-2): the bare prompt when the processor inserts the
        image tokens itself (BLIP-2's query tokens), else the processor's image placeholder, a newline and
        the prompt. Decided once per prompt, on the first image.
        """
        if prompt in self._texts:
            return self._texts[prompt]
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = prompt
            image_token = getattr(self.processor, "image_token", None)
            image_token = getattr(image_token, "content", image_token)  # an AddedToken in some processors
            if image_token and self.tokenizer is not None:
                token_id = self.tokenizer.convert_tokens_to_ids(image_token)
                ids = self.processor(images=[image], text=[prompt], return_tensors="pt").get("input_ids")
                if ids is not None and not bool((ids == token_id).any()):
                    text = f"{image_token}\n{prompt}"
        self._texts[prompt] = text
        return text

    def caption(self, images, prompt, clsnames=None):
        import torch

        if not images:
            return []
        text = self._text(prompt, images[0])
        inputs = self.processor(images=list(images), text=[text] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        for k, v in inputs.items():  # pixel values in the model's dtype, ids untouched
            if torch.is_floating_point(v):
                inputs[k] = v.to(self.model.dtype)
        pad_id = getattr(self.tokenizer, "pad_token_id", None)  # T5's is 0: test for None, not falsiness
        if pad_id is None:
            pad_id = getattr(self.tokenizer, "eos_token_id", None)
        extra = {} if pad_id is None else {"pad_token_id": pad_id}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, **extra)
        ids = inputs.get("input_ids")
        if not self.encoder_decoder and ids is not None:
            n = ids.shape[1]  # decoder-only models return the prompt, then the new tokens (a few only the latter)
            if out.shape[1] >= n and torch.equal(out[:, :n].to(ids), ids):
                out = out[:, n:]
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def check_model_folder(path: Path, trust_remote_code: bool = False) -> None:
    """Fail early, with what is missing, on a folder transformers cannot load natively.

    Raises:
        FileNotFoundError: no ``config.json`` (not a ``save_pretrained`` folder).
        ValueError: the model type is unknown to the installed transformers: either the folder brings its
            own modelling code (``auto_map``) and ``trust_remote_code`` is off, or no code exists for it.
    """
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing (a model folder as written by save_pretrained is needed)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_file}: unreadable ({_one_line(err)})") from err
    model_type = config.get("model_type")
    if model_type is None or model_type in CONFIG_MAPPING_NAMES:  # None: left to transformers to work out
        return
    if config.get("auto_map"):
        if not trust_remote_code:
            raise ValueError(f"{path}: model type {model_type!r} is not part of transformers {__version__}; the "
                             "folder brings its own code (auto_map in config.json): pass --trust_remote_code to run "
                             "it, or use a transformers-native ('-hf') conversion or the openai backend")
        return
    raise ValueError(f"{config_file}: model type {model_type!r} is unknown to transformers {__version__} and the "
                     "folder has no code of its own (auto_map)")


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
