"""Flax Linen models: layers, the condition embedding, the mcVAE, the U-Net, the KL autoencoder and the mcLDM."""
