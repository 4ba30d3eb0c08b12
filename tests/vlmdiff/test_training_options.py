"""Training options: gradient checkpointing of the UNet and the SGN, the optimiser choice, bf16-mixed."""

import math

import lightning as L
import pytest
import torch

import ldm.modules.attention as attention
import ldm.modules.unet as unet
from ldm.modules.attention import BasicTransformerBlock
from ldm.modules.unet import ResBlock
from tests.conftest import TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff import optim
from vlmdiff.model import create_model
from vlmdiff.optim import build_optimizer, use_fused_adamw
from vlmdiff.training import TrainConfig, build_model


def checkpoint_flags(module):
    return {m.use_checkpoint if isinstance(m, ResBlock) else m.checkpoint
            for m in module.modules() if isinstance(m, (ResBlock, BasicTransformerBlock))}


@pytest.mark.parametrize("enabled", [False, True])
def test_gradient_checkpointing_setting_reaches_the_unet_and_the_sgn(enabled, monkeypatch):
    model = build_model(TrainConfig(model_config=str(TINY_CONFIG), gradient_checkpointing=enabled),
                        load_weights=False)
    assert checkpoint_flags(model.model.diffusion_model) == {enabled}
    assert checkpoint_flags(model.control_model) == {enabled}  # tiny.yaml says use_checkpoint: true
    calls = []

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return fn(*args)

    monkeypatch.setattr(unet, "checkpoint", counting)
    monkeypatch.setattr(attention, "checkpoint", counting)
    sgn = model.control_model.train()
    g = torch.Generator().manual_seed(0)
    sgn(torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 3, 128, 128, generator=g), torch.tensor([10]),
        torch.randn(1, 77, 64, generator=g))
    n_blocks = sum(isinstance(m, (ResBlock, BasicTransformerBlock)) for m in sgn.modules())
    assert len(calls) == (n_blocks if enabled else 0)


def test_fused_adamw_only_on_cuda_parameters_with_a_torch_that_has_it():
    cpu = [torch.nn.Parameter(torch.zeros(2))]
    meta = [torch.nn.Parameter(torch.zeros(2, device="meta"))]
    assert not use_fused_adamw(cpu, supported=True)  # default: CUDA only
    assert use_fused_adamw(cpu, device_types=("cuda", "cpu"), supported=True)
    assert not use_fused_adamw(cpu, device_types=("cuda", "cpu"), supported=False)
    assert not use_fused_adamw(cpu + meta, device_types=("cpu",), supported=True)  # one device type off the list
    assert not use_fused_adamw([], supported=True)
    assert optim.supports_fused_adamw()  # torch >= 2.0


def test_build_optimizer_passes_fused_when_chosen(monkeypatch):
    params = [torch.nn.Parameter(torch.ones(3))]
    plain = build_optimizer(params, lr=1e-5)
    assert isinstance(plain, torch.optim.AdamW) and not plain.defaults["fused"]
    assert plain.defaults["lr"] == 1e-5 and plain.defaults["weight_decay"] == 0.01
    monkeypatch.setattr(optim, "FUSED_DEVICE_TYPES", ("cpu",))  # this torch also has a CPU fused kernel
    fused = build_optimizer(params, lr=1e-5)
    assert fused.defaults["fused"] is True
    params[0].grad = torch.ones(3)
    fused.step()
    assert torch.all(params[0] < 1)


def test_adamw8bit_refuses_cpu_parameters_in_one_line():
    with pytest.raises(ValueError, match=r"^optimizer=adamw8bit runs on CUDA parameters only.*on cpu; "
                                         r"use optimizer=adamw$"):
        build_optimizer([torch.nn.Parameter(torch.ones(2))], "adamw8bit", lr=1e-5)
    with pytest.raises(ValueError, match="optimizer='sgd' is unknown"):
        build_optimizer([torch.nn.Parameter(torch.ones(2))], "sgd", lr=1e-5)


def test_optimizer_setting_reaches_configure_optimizers():
    with pytest.raises(ValueError, match="optimizer='adam' is unknown"):
        build_model(TrainConfig(model_config=str(TINY_CONFIG), optimizer="adam"), load_weights=False)
    model = build_model(TrainConfig(model_config=str(TINY_CONFIG), optimizer="adamw8bit"), load_weights=False)
    with pytest.raises(ValueError, match="adamw8bit runs on CUDA parameters only"):
        model.configure_optimizers()


class Batches(torch.utils.data.Dataset):
    def __init__(self, n=4, size=128):
        g = torch.Generator().manual_seed(3)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.captions = ["a photo of a brick wall", "", "a grey disc", ""][:n]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"jpg": self.images[i], "hint": self.images[i], "txt": self.captions[i]}


class Losses(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


def train_losses(precision: str) -> list[float]:
    seed_everything(0)
    model = create_model(TINY_CONFIG)
    model.only_mid_control = True
    torch.nn.init.normal_(model.model.diffusion_model.out[2].weight, std=0.02)  # gradients reach the SGN
    losses = Losses()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[losses])
    trainer.fit(model, torch.utils.data.DataLoader(Batches(), batch_size=2))
    return losses.values


def test_bf16_mixed_training_gives_finite_losses_close_to_fp32():
    fp32, bf16 = train_losses("32-true"), train_losses("bf16-mixed")
    assert len(fp32) == len(bf16) == 3
    assert all(math.isfinite(v) for v in bf16)
    # measured on CPU: relative differences ≤ 1.3e-4 over the three steps
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= 1e-3 * abs(a), (fp32, bf16)
    assert fp32 != bf16  # bf16 autocast really ran


@pytest.mark.parametrize("routing", [True, False])
def test_the_run_config_sets_the_model_settings_and_the_log_says_so(routing, caplog):
    """only_mid_control, learning_rate, seed and optimizer come from the run config, whatever the model config
    says (tiny.yaml: only_mid_control false, learning_rate 1e-4), and each is logged."""
    cfg = TrainConfig(model_config=str(TINY_CONFIG), only_mid_control=routing, learning_rate=3e-4, seed=7)
    with caplog.at_level("INFO", logger="vlmdiff.model"):
        model = build_model(cfg, load_weights=False)
    assert (model.only_mid_control, model.learning_rate, model.seed, model.optimizer_name) == (routing, 3e-4, 7, "adamw")
    said = f" ({TINY_CONFIG} says False)" if routing else ""
    assert f"only_mid_control={routing!r} from the run config{said}" in caplog.messages
    assert f"learning_rate=0.0003 from the run config ({TINY_CONFIG} says 0.0001)" in caplog.messages
    assert model.configure_optimizers().defaults["lr"] == 3e-4
    other = create_model(TINY_CONFIG, params={"seed": 8})
    draws = [torch.randn(4, generator=m.step_generator(0)) for m in (model, other)]
    assert not torch.equal(*draws)  # a step's draws follow the run's seed
    assert torch.equal(draws[0], torch.randn(4, generator=create_model(TINY_CONFIG, params={"seed": 7}).step_generator(0)))
