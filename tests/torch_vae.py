"""Two PyTorch mcVAE training loops: one shaped like the authors' code, and the strongest we know how to write.

``train_torch`` is the reference-shaped loop (eager, a ``DataLoader``, the loss built step by step), what the paper's
users run. ``ExpertTrainer`` is what a good PyTorch engineer would write instead: the training split resident on the
device, no DataLoader, each step's batch indexed from a per-epoch permutation inside the step, and the whole step —
masking, forward, ``torch.func`` gradient, Adam — one function compiled by ``torch.compile`` (inductor). R runs train
as one model: their parameters stacked by ``torch.func.stack_module_state`` and the step ``vmap``-ed over them with
``functional_call``. Both have the same architecture, batch, optimiser, loss, masking and data split as an mcjax
config, so the benchmark compares the frameworks, not the models. Run alone it trains one run and prints its test MSE
at inference sparsity 0:

    python tests/torch_vae.py                    # the paper's mcVAE of configs/geobiked_vae.py:paper, reference loop
    python tests/torch_vae.py --expert           # the same run with ExpertTrainer (torch.compile)
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

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

    def forward(self, x, cat, num, eps=None):
        mean, logvar = self.to_posterior(self.encoder(x)).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * (torch.randn_like(mean) if eps is None else eps)
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

COMPILE_MODE, COMPILE_BACKEND = "default", "inductor"  # torch.compile's settings for ExpertTrainer


class ExpertTrainer:
    """R runs (or one, ``num_runs=None``) of the mcVAE as one model, each step one compiled function.

    Per epoch each run draws a permutation of the resident training rows (drop-last batches, as the reference loop);
    a step gathers its batch by index, masks each condition with the run's probability p, draws z-noise, and takes
    a ``torch.func`` gradient and an Adam step (torch.optim.Adam's and optax's update: bias-corrected moments,
    eps outside the square root), with the runs ``vmap``-ed over stacked parameters. Seeds differ per run through
    their initialisations and, being one random stream, their batches, masks and noise.
    """

    def __init__(self, config, data, num_runs=None, sparsity=None, seed=0, device="cpu", compile=True):
        t, o = config.train, config.optimizer
        if config.optimizer.name != "adam" or o.lr_decay_every_epochs or config.sparsity.kind != "constant":
            raise ValueError("ExpertTrainer trains Adam at a constant learning rate and sparsity.")
        torch.manual_seed(seed)
        spec = data.stats.conditions
        self.x = torch.tensor(data.train_x_NxD, device=device)
        self.cat = torch.tensor(np.asarray(data.train_conditions.cat_BxK), dtype=torch.long, device=device)
        self.num = torch.tensor(np.asarray(data.train_conditions.num_BxJ), device=device)
        self.num_runs, self.batch, self.device = num_runs, min(t.batch_size, len(self.x)), device
        self.steps_per_epoch = len(self.x) // self.batch
        models = [TorchMCVAE(self.x.shape[1], spec.num_categories, len(spec.numerical_names), config.model).to(device)
                  for _ in range(num_runs or 1)]
        self.template = copy.deepcopy(models[0]).to("meta")
        if num_runs is None:
            self.params = {k: w.detach().clone() for k, w in models[0].named_parameters()}
        else:
            self.params = {k: w.detach() for k, w in stack_module_state(models)[0].items()}
        self.m = {k: torch.zeros_like(w) for k, w in self.params.items()}
        self.v = {k: torch.zeros_like(w) for k, w in self.params.items()}
        self.t = torch.zeros((), device=device)
        p = config.sparsity.p_start if sparsity is None else sparsity
        self.p = torch.as_tensor(p, dtype=torch.float32, device=device).expand(num_runs or 1)[: num_runs or 1]
        if num_runs is None:
            self.p = self.p[0]
        self.hyper = (float(o.learning_rate), float(o.b1), float(o.b2), 1e-8, float(t.beta),
                      float(t.reconstruction_weight), t.reconstruction_reduction == "mean")
        self.step_fn = (torch.compile(self._step, mode=COMPILE_MODE, backend=COMPILE_BACKEND, fullgraph=True,
                                      dynamic=False) if compile else self._step)

    def _loss(self, params, x, cat, num, uniform_cat, uniform_num, eps, p):
        *_, beta, weight, mean_rows = self.hyper
        cat = cat.masked_fill(uniform_cat < p, 0)
        num = num.masked_fill(uniform_num < p, float("nan"))
        x_hat, mean, logvar = functional_call(self.template, params, (x, cat, num, eps))
        se = ((x_hat - x) ** 2).sum(-1)
        kl = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(-1).mean()
        return weight * (se.mean() if mean_rows else se.sum()) + beta * kl

    def _run_step(self, params, m, v, t, x, cat, num, uniform_cat, uniform_num, eps, p):
        lr, b1, b2, tiny = self.hyper[:4]
        grads, loss = grad_and_value(self._loss)(params, x, cat, num, uniform_cat, uniform_num, eps, p)
        m = {k: b1 * m[k] + (1 - b1) * g for k, g in grads.items()}
        v = {k: b2 * v[k] + (1 - b2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - b1**t, 1 - b2**t
        params = {k: w - lr * (m[k] / c1) / (torch.sqrt(v[k] / c2) + tiny) for k, w in params.items()}
        return params, m, v, loss

    def _step(self, params, m, v, t, rows, p):
        """One step of every run: ``rows`` ([B] or [R, B]) index the resident training split."""
        x, cat, num = self.x[rows], self.cat[rows], self.num[rows]
        eps = torch.randn(*rows.shape, self.template.to_posterior.out_features // 2, device=x.device)
        noise = (torch.rand(cat.shape, device=x.device), torch.rand(num.shape, device=x.device), eps)
        step = self._run_step if self.num_runs is None else vmap(
            self._run_step, in_dims=(0, 0, 0, None, 0, 0, 0, 0, 0, 0, 0), randomness="error")
        return (*step(params, m, v, t + 1, x, cat, num, *noise, p), t + 1)

    def train(self, epochs: int) -> torch.Tensor:
        """Trains ``epochs`` epochs; returns the mean loss of each ([epochs] or [epochs, R])."""
        n, b, steps = len(self.x), self.batch, self.steps_per_epoch
        losses = []
        for _ in range(epochs):
            if self.num_runs is None:
                order = torch.randperm(n, device=self.device)[: steps * b].view(steps, b)
            else:
                order = torch.rand(self.num_runs, n, device=self.device).argsort(1)[:, : steps * b]
                order = order.view(self.num_runs, steps, b).transpose(0, 1)
            epoch = []
            for s in range(steps):
                self.params, self.m, self.v, loss, self.t = self.step_fn(self.params, self.m, self.v, self.t,
                                                                         order[s], self.p)
                epoch.append(loss)
            losses.append(torch.stack(epoch).mean(0))
        if self.device != "cpu":
            torch.cuda.synchronize()
        return torch.stack(losses)

    def model(self, run: int = 0) -> TorchMCVAE:
        """Run ``run``'s trained weights in a TorchMCVAE (for ``reference_mse``)."""
        model = copy.deepcopy(self.template).to_empty(device=self.device)
        weights = self.params if self.num_runs is None else {k: w[run] for k, w in self.params.items()}
        model.load_state_dict(weights)
        return model


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
    parser.add_argument("--expert", action="store_true", help="ExpertTrainer (torch.compile) instead")
    args = parser.parse_args()
    config = get_config("paper")  # the model this twin implements: the paper's N(0, I) prior
    data = prepare_experiment(config)[0]
    start = time.perf_counter()
    if args.expert:
        trainer = ExpertTrainer(config, data, device=args.device)
        trainer.train(args.epochs or config.train.epochs)
        model, wall = trainer.model(), time.perf_counter() - start
        step_s = wall / (trainer.steps_per_epoch * (args.epochs or config.train.epochs))
    else:
        model, step_s, wall = train_torch(config, data, args.epochs, device=args.device)
    mse = reference_mse(model, data, device=args.device)
    print(f"torch: {step_s * 1e3:.3f} ms/step, {wall:.1f}s training, test MSE at s=0: {mse:.4f}")


if __name__ == "__main__":
    main()
