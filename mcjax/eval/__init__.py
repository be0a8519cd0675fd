"""Evaluation of trained models: the mcVAE protocols, mcLDM image scores, and the reports beside the paper."""
