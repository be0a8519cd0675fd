"""Generation from a run directory alone: designs from the mcVAE, images from the mcLDM, and how they are drawn."""
