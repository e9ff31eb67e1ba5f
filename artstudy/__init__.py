"""How CNNs pretrained on ImageNet transfer to artworks: a reproducible, Jupyter-first study

Modules:

- `artstudy.activations`: Forward hooks on named layers and one streaming pass over a DataLoader, for one model or two at once.
- `artstudy.battery`: One command from a folder of artworks to decided findings: what fine-tuning an ImageNet CNN changes on *your* images, and whether it pays.
- `artstudy.compare`: Every metric of `artstudy.metrics` between two checkpoints on one dataset, in one pass, with nulls and a BN control, cached in the run folder; the weight change of a run folder, the distance between datasets, and the plots.
- `artstudy.config`: Settings, paths, seeds, devices and safe file writes: everything the rest of the study reads from one place.
- `artstudy.data`: Art datasets as tables of files and labels: load and validate them, re-split and subsample them, cache them resized, and serve them to fastai.
- `artstudy.explorer`: An interactive look at single filters: pick a run and a reference, a layer and a channel; see the filter's feature visualisation, its top images and their classes in both models, and its D_k, overlap and class entropy.
- `artstudy.features`: The pooled features of a frozen body, computed once per image and kept on disk.
- `artstudy.featvis`: Lucid-style feature visualisation on torchvision's `transforms.v2`: optimise an image, in a decorrelated Fourier space, so that a chosen filter fires; render many filters in one batch, cache the renders on disk.
- `artstudy.fetch`: `fetch_dataset` rebuilds `wikiart7`, `pacs_art` and `wikiart_mt` from their public sources, pinned and verified.
- `artstudy.findings`: The study's claims as tests: each claim of a seed paper is registered once, with the grids that test it and the function that decides it, and every verdict carries its effect, 95% CI, p-value, n and minimal detectable effect.
- `artstudy.metrics`: What fine-tuning changes: in the weights, in the features (CKA), in the maximal-activation images, and how far apart two datasets are.
- `artstudy.models`: The backbone registry: ImageNet weights offline, layer names for the analysis, parameter groups, re-initialisation and checkpoints.
- `artstudy.multitask`: One shared body, one head per task (style, genre, artist), a loss that ignores missing labels, and a metric per task.
- `artstudy.params`: One typed schema for every parameter of a run and of a study: its type, default, range and meaning, written once.
- `artstudy.pipeline`: One run, from its parameters to a finished run folder; and any checkpoint scored on any dataset.
- `artstudy.report`: The study's findings, each decided by a paired test, with the figures and the settings behind every number.
- `artstudy.runs`: The run folder, the sweep runner and the results table: a YAML grid becomes run folders, executed notebooks and one tidy table.
- `artstudy.saliency`: Where in an image does a model look? Grad-CAM and integrated gradients from captum, for two models side by side.
- `artstudy.stats`: Paired tests, minimal detectable effects and verdicts: how the study decides whether a seed paper's claim holds.
- `artstudy.train`: Every transfer mode of the papers as a fastai `Learner` with real parameter groups."""

__version__ = "0.1.0"
