"""Training presets, shipped inside the package as ``hyperrep_hf.train_configs``."""
