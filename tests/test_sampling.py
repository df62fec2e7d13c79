import torch
from diffusers import DDIMScheduler

from mpqdm.frontend.fp_model import default_scheduler
from mpqdm.frontend.sampling import ddim_sample, ddim_schedule


def test_our_ddim_matches_diffusers():
    ddpm = default_scheduler()
    ref = DDIMScheduler.from_config(ddpm.config)
    ref.set_timesteps(20)
    ours = ddim_schedule(ddpm.alphas_cumprod, 20)
    assert list(ours.timesteps) == [int(t) for t in ref.timesteps]

    w = torch.randn(1, 1, 8, 8)

    def eps(x, t, i):
        return torch.tanh(x * w + t.view(-1, 1, 1, 1) / 1000.0)

    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = noise.clone()
    for t in ref.timesteps:
        x = ref.step(eps(x, t.expand(3), 0), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ddim_sample(eps, noise, ours), x, rtol=1e-5, atol=1e-5)


def test_step_index_is_passed_in_order():
    seen = []
    sched = ddim_schedule(default_scheduler().alphas_cumprod, 5)

    def eps(x, t, i):
        seen.append((i, int(t[0])))
        return torch.zeros_like(x)

    ddim_sample(eps, torch.zeros(1, 1, 2, 2), sched)
    assert seen == [(0, 800), (1, 600), (2, 400), (3, 200), (4, 0)]
