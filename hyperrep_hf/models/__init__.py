"""The models, one folder each, in the transformers layout (configuration, modeling, processing)."""
