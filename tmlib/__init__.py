"""tmlib: selective masking for task-guided pre-training (Gu et al. 2020) and learned binary weight
masks as an alternative to fine-tuning (Zhao et al. 2020), for HF BERT-family models.

A folder per paper over a shared core:
    core         runs and stages, fingerprints, configs, the training loop, models, precision, statistics
    tasks        labelled sequence and token tasks, classifiers on the training loop
    selective    the first paper: token importance (buffer), the tagger, selective MLM masking, TaskPT
    importance   attribution methods beside the buffer method (notebook 02)
    masking      the second paper: masks, the methods they are compared with, serving, the loss landscape
    experiments  one module per notebook; plots, widgets and the entry points (cli, suite, report) on top
"""

__version__ = "0.1.0"
