"""One optimiser step of the tiny model touches exactly the reference's trainable set."""

import lightning as L
import pytest
import torch

from tests.conftest import TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff.model import create_model

TRAINABLE_PREFIXES = ("control_model.", "model.diffusion_model.output_blocks.", "model.diffusion_model.out.")


def make_batch(n=2, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 3, size, size, generator=g)
    return {"jpg": img, "hint": img.clone(), "txt": ["a photo of a brick wall", ""][:n]}


class OneBatch(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.items = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["txt"]))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def trained():
    """A fresh tiny model (zero-initialised layers as in training), before and after one Lightning step."""
    seed_everything(0)
    model = create_model(TINY_CONFIG)
    model.only_mid_control = True
    # Give the zero-initialised UNet decoder output non-zero weights, so gradients reach the SGN.
    torch.nn.init.normal_(model.model.diffusion_model.out[2].weight, std=0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(OneBatch(make_batch()), batch_size=2)
    trainer.fit(model, loader)
    return model, before


def test_frozen_parts_are_bit_identical(trained):
    model, before = trained
    after = model.state_dict()
    for key, value in before.items():
        if not key.startswith(TRAINABLE_PREFIXES):
            assert torch.equal(after[key], value), f"{key} changed"


def test_trainable_parts_moved(trained):
    model, before = trained
    after = model.state_dict()
    changed = [k for k in before if k.startswith(TRAINABLE_PREFIXES) and not torch.equal(after[k], before[k])]
    assert any(k.startswith("model.diffusion_model.output_blocks.") for k in changed)
    assert "control_model.middle_block_out.0.weight" in changed  # zero-initialised, now learning


def test_unused_sgn_paths_stay_exactly_zero(trained):
    """docs/design.md R2: SFF convs and zero_convs[0..8] get zero gradient under only_mid_control=True."""
    model, _ = trained
    sgn = model.control_model
    for i in range(1, 4):
        for j in range(1, 4):
            assert torch.count_nonzero(getattr(sgn, f"down{i}{j}")[0].weight) == 0
    for i in range(9):
        assert torch.count_nonzero(sgn.zero_convs[i][0].weight) == 0
    assert torch.count_nonzero(sgn.zero_convs[9][0].weight) > 0  # a consumed control did learn


def test_optimizer_is_adamw_over_the_trainable_set(trained):
    model, _ = trained
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == model.learning_rate and opt.defaults["weight_decay"] == 0.01
    names = {id(p): n for n, p in model.named_parameters()}
    in_opt = {names[id(p)] for group in opt.param_groups for p in group["params"]}
    expected = {n for n, _ in model.named_parameters() if n.startswith(TRAINABLE_PREFIXES)}
    assert in_opt == expected


def test_frozen_modules_stay_in_eval_mode(trained):
    model, _ = trained
    model.train()
    assert not model.first_stage_model.training and not model.cond_stage_model.training
    assert model.control_model.training


def test_loss_is_the_plain_mse_of_the_noise_prediction():
    seed_everything(1)
    model = create_model(TINY_CONFIG).eval()
    z = torch.randn(2, 4, 16, 16)
    cond = {"c_crossattn": [torch.randn(2, 77, 64)], "c_concat": [torch.randn(2, 3, 128, 128)]}
    t, noise = torch.tensor([5, 900]), torch.randn(2, 4, 16, 16)
    loss, logs = model.p_losses(z, cond, t, noise)
    eps = model.apply_model(model.q_sample(z, t, noise), t, cond)
    assert torch.allclose(loss, ((eps - noise) ** 2).mean())
    assert set(logs) == {"train/loss_simple", "train/loss_vlb", "train/loss"}
