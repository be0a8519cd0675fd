"""A straightforward PyTorch mcVAE training loop (eager, DataLoader), shaped like the authors' code.

The same architecture, batch, optimiser, loss, masking and data split as an mcjax config, so the benchmark compares
the frameworks, not the models. Run alone it trains one run and prints its test MSE at inference sparsity 0:

    python tests/torch_vae.py          # the paper's mcVAE of configs/geobiked_vae.py:paper
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from mcjax.train.sweep import prepare_experiment

ACTIVATIONS = {"relu": nn.ReLU, "selu": nn.SELU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class TorchMCVAE(nn.Module):
    def __init__(self, num_keypoints, num_categories, num_numerical, model_config):
        super().__init__()
        act = ACTIVATIONS[model_config.activation]
        hidden = list(model_config.hidden_dims)
        d, e = model_config.keypoint_embedding_dim, model_config.condition_embedding_dim
        self.indicator = model_config.numerical_missing == "indicator"
        self.placeholder = -1.0 if model_config.numerical_missing == "paper" else 0.0
        layers, width = [nn.Linear(num_keypoints, d)], d
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.encoder = nn.Sequential(*layers)
        self.to_posterior = nn.Linear(width, 2 * model_config.latent_dim)
        self.tables = nn.ModuleList(nn.Embedding(n + 1, e) for n in num_categories)
        self.numerical = nn.ModuleList(nn.Linear(2 if self.indicator else 1, e) for _ in range(num_numerical))
        layers, width = [], model_config.latent_dim + e * (len(num_categories) + num_numerical)
        for h in reversed(hidden):
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, num_keypoints))
        self.decoder = nn.Sequential(*layers)

    def embed(self, cat, num):
        parts = [table(cat[:, i]) for i, table in enumerate(self.tables)]
        missing = torch.isnan(num)
        value = torch.where(missing, torch.full_like(num, self.placeholder), num)
        for j, layer in enumerate(self.numerical):
            x = torch.stack([value[:, j], missing[:, j].float()], -1) if self.indicator else value[:, j:j + 1]
            parts.append(layer(x))
        return torch.cat(parts, -1)

    def decode(self, z, cat, num):
        return self.decoder(torch.cat([z, self.embed(cat, num)], -1))

    def forward(self, x, cat, num):
        mean, logvar = self.to_posterior(self.encoder(x)).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.decode(z, cat, num), mean, logvar


def mask(cat, num, p):
    """Each condition independently dropped with probability p (categorical → 0, numerical → NaN)."""
    drop_cat = torch.rand(cat.shape, device=cat.device) < p
    drop_num = torch.rand(num.shape, device=num.device) < p
    return cat.masked_fill(drop_cat, 0), num.masked_fill(drop_num, float("nan"))


def make_optimizer(model, config):
    o = config.optimizer
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2))
    return torch.optim.AdamW(model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), weight_decay=o.weight_decay)


def train_torch(config, data, epochs=None, seed=0, device="cpu", train_size=0):
    """Trains one run (on the first ``train_size`` rows of a seeded order of the training split when > 0); returns
    (model, seconds per step over the run, wall seconds). Batches of min(batch size, rows) come from a CPU DataLoader
    and are moved to ``device``, as in the authors' code."""
    torch.manual_seed(seed)
    rows = np.random.default_rng(seed).permutation(len(data.train_x_NxD))[:train_size or None]
    x = torch.tensor(data.train_x_NxD[rows])
    cat = torch.tensor(np.asarray(data.train_conditions.cat_BxK)[rows], dtype=torch.long)
    num = torch.tensor(np.asarray(data.train_conditions.num_BxJ)[rows])
    spec = data.stats.conditions
    model = TorchMCVAE(x.shape[1], spec.num_categories, len(spec.numerical_names), config.model).to(device)
    optimizer = make_optimizer(model, config)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, cat, num),
                                         batch_size=min(config.train.batch_size, len(rows)), shuffle=True,
                                         drop_last=True)
    t = config.train
    if config.sparsity.kind != "constant" or config.sweep.schedules or config.sweep.train_sparsity:
        raise ValueError("The PyTorch baseline trains one run at a constant sparsity.")
    p = config.sparsity.p_start
    steps, start = 0, time.perf_counter()
    for _ in range(epochs or t.epochs):
        for xb, cb, nb in loader:
            xb, cb, nb = xb.to(device), cb.to(device), nb.to(device)
            cb, nb = mask(cb, nb, p)
            x_hat, mean, logvar = model(xb, cb, nb)
            se = ((x_hat - xb) ** 2).sum(-1)
            recon = se.mean() if t.reconstruction_reduction == "mean" else se.sum()
            kl = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(-1).mean()
            loss = t.reconstruction_weight * recon + t.beta * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    if device != "cpu":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return model, wall / steps, wall


@torch.no_grad()
def reference_mse(model, data, s=0.0, seed=0, device="cpu"):
    """The reference protocol at inference sparsity s: one prior z for all test rows."""
    torch.manual_seed(seed)
    x = torch.tensor(data.test_x_NxD, device=device)
    cat = torch.tensor(np.asarray(data.test_conditions.cat_BxK), dtype=torch.long, device=device)
    num = torch.tensor(np.asarray(data.test_conditions.num_BxJ), device=device)
    cat, num = mask(cat, num, s)
    z = torch.randn(1, model.to_posterior.out_features // 2, device=device).expand(len(x), -1)
    return float(((model.decode(z, cat, num) - x) ** 2).sum(-1).mean())


def main():
    import argparse

    from mcjax.configs.geobiked_vae import get_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config = get_config("paper")  # the model this twin implements: the paper's N(0, I) prior
    data = prepare_experiment(config)[0]
    model, step_s, wall = train_torch(config, data, args.epochs, device=args.device)
    mse = reference_mse(model, data, device=args.device)
    print(f"torch: {step_s * 1e3:.3f} ms/step, {wall:.1f}s training, test MSE at s=0: {mse:.4f}")


if __name__ == "__main__":
    main()
