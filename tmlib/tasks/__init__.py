"""Labelled tasks, shared by both papers: where the data comes from and how a classifier is trained on it.

data            sequence tasks (builtin, csv:/jsonl: files, hub:) and unlabelled corpora
token_data      token tasks (POS on OANC, CoNLL files, hub)
classify        sequence classification on :func:`tmlib.core.training.fit`
token_classify  token classification on :func:`tmlib.core.training.fit`
cls_forward     the [CLS]-only last layer of the "fast" kernels
finetune        a fine-tuned classifier as a cached stage
"""
