"""The shared core: nothing here knows about either paper.

runs         Stage and RunStore: cached artifacts, manifests, locks
fingerprint  a stage's code fingerprint (the syntax trees of its build code)
config       flat <-> nested configs, strict YAML parameters, the project root
training     fit: the one training loop (accelerate)
models       model and tokenizer names, offline assets
precision    the arithmetic (bf16 where native, else fp32) and the attention kernels
runtime      threads and the calibration step
stats        paired gaps, detectable gaps, Holm
assets, hub  offline registry packages and the model / dataset hub
logs, heartbeat  progress on long work
"""
