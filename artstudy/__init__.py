"""How CNNs pretrained on ImageNet transfer to artworks: a reproducible, Jupyter-first study

Modules:

- `artstudy.config`: Settings, paths, seeds, devices and safe file writes: everything the rest of the study reads from one place."""

__version__ = "0.1.0"
