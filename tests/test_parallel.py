"""Data-parallel GAN steps: the shares of W processes, averaged, equal one process on the same global batch.

The processes are emulated in one interpreter (W models, one per rank, same seeds), so the check needs no process
group; the real multi-process run (gloo, two srun tasks on a local Slurm cluster) is in tests/test_slurm.py.
"""

from __future__ import annotations

import pytest
import torch

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from qcdgip.training import cluster_environment

SECTIONS = [
    {},
    {
        "generator": {"kind": "mlp", "depth": 1, "width": 8},
        "optimizer_g": {"name": "adam"},
        "training": {"params_per_step": 3},
    },
    {"discriminator": {"mode": "single", "set_size": 4}, "loss": {"kind": "lsgan"}},
    {
        "loss": {"kind": "wgan_gp"},
        "training": {"data_batch": 30, "params_per_step": 2},
        "discriminator": {"set_size": 2},
    },
    {"loss": {"kind": "bce"}, "training": {"bootstrap": False}},
]


def config(sections: dict) -> GANConfig:
    data = {
        "discriminator": {"depth": 1, "width": 8},
        "training": {"replicas": 3, "steps": 4, "events_per_param": 48, "progress": False, "dtype": "float64"},
    }
    for name, update in sections.items():
        data[name] = {**data.get(name, {}), **update}
    return GANConfig.model_validate(data)


def gradients(model: InverseGAN, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generator loss and gradients, then discriminator gradients on the same events, for one process's share."""
    model.set_shard(rank, world)
    replicas = slice(0, model.n_replicas)
    model.zero_grad()
    loss, _, events = model.generator_loss(replicas)
    loss.sum().backward()
    g = torch.cat([p.grad.flatten() for p in model.generator.parameters()])
    model.zero_grad()
    model.discriminator_loss(events, replicas).sum().backward()
    d = torch.cat([p.grad.flatten() for p in model.discriminators.parameters() if p.grad is not None])
    return loss.detach(), g, d


@pytest.mark.parametrize("sections", SECTIONS)
@pytest.mark.parametrize("world", [2, 3])
def test_process_shares_average_to_the_one_process_step(experiment_b, data_b, sections, world):
    cfg = config(sections)
    one = gradients(InverseGAN(cfg, experiment_b, data_b), 0, 1)
    shares = [gradients(InverseGAN(cfg, experiment_b, data_b), r, world) for r in range(world)]
    for part, (name, whole) in enumerate(zip(("loss", "generator", "discriminator"), one)):
        mean = torch.stack([s[part] for s in shares]).mean(0)
        torch.testing.assert_close(mean, whole, rtol=1e-10, atol=1e-12, msg=f"{name} differs")
    # Each process really computed something else: its share alone is not the whole step.
    assert not torch.allclose(shares[0][2], one[2], rtol=1e-3)


def test_second_step_streams_stay_in_step(experiment_b, data_b):
    """After a whole step on every process, the replicas' random streams are where one process's are."""
    cfg = config({})
    one, two = InverseGAN(cfg, experiment_b, data_b), InverseGAN(cfg, experiment_b, data_b)
    gradients(one, 0, 1)
    gradients(two, 1, 2)
    assert all(torch.equal(a, b) for a, b in zip(one.rng_state(), two.rng_state()))


def test_bad_splits_name_the_field(experiment_b, data_b):
    with pytest.raises(ValueError, match=r"training\.events_per_param"):
        config({"training": {"events_per_param": 50, "devices": 4}})
    with pytest.raises(ValueError, match="set_size"):
        config({"training": {"events_per_param": 48, "devices": 2}, "discriminator": {"set_size": 5}})
    model = InverseGAN(config({}), experiment_b, data_b)
    with pytest.raises(ValueError, match=r"training\.events_per_param"):
        model.set_shard(0, 5)


@pytest.mark.filterwarnings("ignore:The `srun` command is available")
def test_srun_task_count_must_match_the_config(monkeypatch):
    for key in ("SLURM_STEP_ID", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert type(cluster_environment(2, 1)).__name__ == "LightningEnvironment"  # Lightning launches the processes
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    with pytest.raises(ValueError, match=r"training.devices x training.num_nodes = 2 x 1 = 2 .* 4 tasks"):
        cluster_environment(2, 1)
    assert type(cluster_environment(2, 2)).__name__ == "SLURMEnvironment"
    assert type(cluster_environment(1, 1)).__name__ == "LightningEnvironment"
