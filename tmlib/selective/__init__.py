"""Selective masking for task-guided pre-training (Gu et al., EMNLP 2020).

    types       TokenScores: the importance of each token of one text
    buffer      the buffer method: which tokens a fine-tuned classifier needs (batched, plus a plain reference)
    stopwords   the stop lists whose tokens are never important
    tagger      a token classifier that learns buffer labels and labels a large corpus
    collators   MLM masking: plain 15%, selective, same-count random, static masks
    mlm         GenePT and TaskPT: packing a corpus, drawing masks once, MLM training on fit

Notebook 01 (``tmlib.experiments.selective``) runs the pipeline; notebook 02 explores the importance.
"""
