"""Training: the one host loop, each model's compiled steps, the experiments built from them and their pipelines."""
