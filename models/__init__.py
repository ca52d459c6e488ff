"""Saliency networks: definition, training, export, evaluation. The shipped models they make live
in the runtime package's zoo (worker/zoo, `cropworker.zoo`); this package is not part of it."""
