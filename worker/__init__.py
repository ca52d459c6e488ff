"""cropworker: saliency-based image auto-cropping."""
