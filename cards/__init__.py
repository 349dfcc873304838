"""Card templates, shipped inside the package as ``hyperrep_hf.card_templates``."""
