"""tmlib: selective masking for task-guided pre-training (Gu et al. 2020) and learned binary weight
masks as an alternative to fine-tuning (Zhao et al. 2020), for HF BERT-family models.

Modules, one concept each:
    config    dataclass configs, strict parameter parsing      assets    offline registry packages
    data      datasets (builtin, files, hub)                   models    model / tokenizer names
    training  the one training loop (accelerate)               runs      atomic artifacts + manifests
"""

__version__ = "0.1.0"
