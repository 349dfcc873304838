"""Stage 1, the zoo: network families, image data, recipes, population training, zoo folders, importers.

``networks`` (specs → modules), ``image_data`` (the image data sets the members train on), ``recipes``
(``zoos/*.yaml``), ``population`` (N networks trained at once), ``filter`` (the paper's filter), ``folder`` (build,
load and check a zoo folder), ``importers`` (the Small CNN Zoo and the Model Zoos).
"""

from .folder import build_zoo, load_zoo, parse_zoo_argument

__all__ = ["build_zoo", "load_zoo", "parse_zoo_argument"]
