"""Saliency networks: definition, training, export, evaluation; shipped models in zoo/."""
