"""U-Net shapes and size; samplers against an oracle; per-image determinism across batch sizes."""

import copy

import numpy as np
import pytest
import torch

from ddpmlab.core.unet import UNetConfig as ModelConfig
from ddpmlab.core.sampling import SamplerSpec, ddim_timesteps, sample, sampling_steps
from ddpmlab.core.schedule import Schedule, linear_betas, predict_x0_from_eps, q_sample
from ddpmlab.core.unet import AttnBlock, UNet, count_params, timestep_embedding

TINY = ModelConfig(16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=8)


def test_unet_shape_and_zero_init():
    m = UNet(TINY)
    x = torch.randn(3, 3, 16, 16)
    out = m(x, torch.tensor([0, 5, 9]))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # output conv zero-initialised (improved-diffusion)
    assert sum(isinstance(b, AttnBlock) for b in m.modules()) == 1 + 1 + 2  # down@8, mid, up@8 (2 blocks)


def test_ddpm_cifar10_preset_size():
    cfg = ModelConfig(32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1, norm_groups=32)
    assert count_params(UNet(cfg)) == pytest.approx(35.7e6, rel=3e-3)  # Ho et al.'s 35.7M


def test_unet_gradients_flow_after_a_step():
    torch.manual_seed(0)
    m = UNet(TINY)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x, t = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    loss = (m(x, t) - x).pow(2).mean()
    loss.backward()
    opt.step()
    assert torch.count_nonzero(m(x, t)) > 0


def test_timestep_embedding_distinguishes_steps():
    e = timestep_embedding(torch.arange(1000), 32)
    assert e.shape == (1000, 32)
    d = torch.cdist(e, e) + torch.eye(1000) * 1e9
    assert d.min() > 1e-3


def test_ddim_timesteps():
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    assert list(ddim_timesteps(10, 10)) == list(range(9, -1, -1))
    assert ddim_timesteps(1000, 10, "leading")[0] == 900
    assert ddim_timesteps(1000, 10, "trailing")[0] == 999
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


class Oracle(torch.nn.Module):
    """Knows x_0: returns the exact eps that produced x_t from it."""

    def __init__(self, sched, x0):
        super().__init__()
        self.s, self.x0 = sched, x0

    def forward(self, x, t):
        ab = torch.tensor(self.s.alpha_bar, dtype=torch.float32)[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


@pytest.mark.parametrize("spec", [SamplerSpec("ddpm"), SamplerSpec("ddpm", variance="large"), SamplerSpec("ddim", steps=7), SamplerSpec("ddim", steps=7, eta=1.0)])
def test_samplers_recover_x0_with_an_oracle(spec):
    sched = Schedule(linear_betas(50))
    x0 = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    out, traj = sample(Oracle(sched, x0), sched, spec, range(3), seed=1, shape=(3, 8, 8), device="cpu", frames=4)
    assert torch.allclose(out, x0.expand(3, -1, -1, -1), atol=1e-4)
    assert len(traj) == 4 and torch.allclose(traj[-1], out)


def test_sampling_steps_counts():
    assert len(sampling_steps(SamplerSpec("ddpm"), 40)) == 40
    assert sampling_steps(SamplerSpec("ddim", steps=5), 40)[-1][1] == -1


@pytest.mark.parametrize("spec", [SamplerSpec("ddpm"), SamplerSpec("ddim", steps=5, eta=0.5)])
def test_image_depends_on_seed_and_index_not_batch(spec):
    torch.manual_seed(0)
    model = UNet(TINY)
    for p in model.parameters():  # make the net non-trivial (its output conv starts at zero)
        p.data.add_(torch.randn_like(p) * 0.05)
    sched = Schedule(linear_betas(12))
    kw = dict(seed=7, shape=(3, 16, 16), device="cpu")
    whole, _ = sample(model, sched, spec, range(5), **kw)
    parts = torch.cat([sample(model, sched, spec, idx, **kw)[0] for idx in ([0, 1], [2, 3, 4])])
    alone, _ = sample(model, sched, spec, [3], **kw)
    assert torch.allclose(whole, parts, atol=1e-5)
    assert torch.allclose(whole[3], alone[0], atol=1e-5)
    other, _ = sample(model, sched, spec, range(5), seed=8, shape=(3, 16, 16), device="cpu")
    assert not torch.allclose(whole, other)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_v_prediction_converts_to_eps_exactly_and_its_loss_is_eps_loss_over_alpha_bar(name):
    """Salimans & Ho 2022: a network answering the true v is, through EpsFromV, a network answering the true
    eps; and for any v-network, a_bar_t x ||v - v_theta||^2 is the eps-space error of the wrapped network."""
    from ddpmlab.core.sampling import EpsFromV, as_eps_predictor, eps_space_factor, per_sample_loss, v_target

    sched = Schedule.from_params(name, 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(8, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 990, 998])
    xt = q_sample(sched, x0, t, noise)
    true_v = v_target(sched, x0, t, noise)
    oracle = lambda x, tt: true_v  # noqa: E731
    assert torch.allclose(EpsFromV(oracle, sched)(xt, t), noise, atol=1e-4)
    # and x_0 recovered from that eps (the samplers' route) is the data, even at t near T
    x0_hat = predict_x0_from_eps(sched, xt, t, EpsFromV(oracle, sched)(xt, t)).clamp(-1, 1)
    assert torch.allclose(x0_hat[:6], x0[:6], atol=1e-3)

    net = UNet(ModelConfig(8, 3, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), norm_groups=8)).eval()
    with torch.no_grad():
        v_err = per_sample_loss(net, sched, x0, t, noise, "v") * eps_space_factor(sched, t, "v")
        eps_err = per_sample_loss(as_eps_predictor(net, sched, "v"), sched, x0, t, noise, "eps")
    assert torch.allclose(v_err, eps_err, rtol=1e-3, atol=1e-7)
    assert as_eps_predictor(net, sched, "eps") is net
    with pytest.raises(ValueError, match="prediction"):
        as_eps_predictor(net, sched, "x0")


def test_unet_runs_with_bf16_weights_close_to_fp32():
    """FastDenoiser's precision="bf16" (CUDA sampling) casts the weights and the input to bf16: the U-Net must
    accept that (the time embedding follows x's dtype) and stay within bf16 rounding of the fp32 output."""
    from ddpmlab.core.device import FastDenoiser

    cfg = ModelConfig(16, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0, norm_groups=8)
    torch.manual_seed(0)
    m = UNet(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
        x, t = torch.randn(4, 3, 16, 16), torch.tensor([0, 10, 500, 999])
        ref = m(x, t)
        out = copy.deepcopy(m).to(torch.bfloat16)(x.bfloat16(), t)
    assert out.dtype == torch.bfloat16
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert 1e-4 < rel < 2e-2, rel  # bf16 really ran (not fp32), and stayed close
    with pytest.raises(ValueError, match="precision 'fp8' is unknown; allowed: bf16, autocast"):
        FastDenoiser(m, torch.device("cpu"), precision="fp8")


def test_autoguidance_combines_the_two_denoisers_and_needs_a_guide_in_the_checkpoint():
    from ddpmlab.core.sampling import AutoGuided
    from ddpmlab.core.checkpoint import CheckpointError, build_sampler_from_checkpoint

    cfg = ModelConfig(8, 3, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), norm_groups=8)
    torch.manual_seed(0)
    net, guide = UNet(cfg).eval(), UNet(cfg).eval()
    for p in list(net.parameters()) + list(guide.parameters()):  # zero-initialised outputs: make both say something
        p.data.normal_(0, 0.05)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 7])
    with torch.no_grad():
        e, g = net(x, t), guide(x, t)
        assert torch.equal(AutoGuided(net, guide, 1.0)(x, t), g + (e - g))
        assert torch.allclose(AutoGuided(net, guide, 1.0)(x, t), e, atol=1e-6) and torch.equal(AutoGuided(net, guide, 0.0)(x, t), g)
        assert torch.allclose(AutoGuided(net, guide, 2.5)(x, t), g + 2.5 * (e - g))
    ckpt = {"model_config": cfg.to_dict(), "schedule_config": {"name": "linear", "T": 10, "beta_start": 1e-4, "beta_end": 0.02},
            "train_config": {"prediction": "eps"}, "ema": net.state_dict()}
    plain, _, _ = build_sampler_from_checkpoint(ckpt, "cpu", 1.0)  # no guidance: the EMA network alone, no guide needed
    with pytest.raises(CheckpointError, match=r"guidance 2.5 needs .*ema_guide") as err:
        build_sampler_from_checkpoint(ckpt, "cpu", 2.5)
    assert "\n" not in str(err.value)
    guided, _, _ = build_sampler_from_checkpoint({**ckpt, "ema_guide": guide.state_dict()}, "cpu", 2.5)
    with torch.no_grad():
        assert torch.equal(plain(x, t), e) and torch.allclose(guided(x, t), g + 2.5 * (e - g))
