"""The zoo recipes, shipped inside the package as ``hyperrep_hf.zoo_recipes`` (see zoos/README.md)."""
