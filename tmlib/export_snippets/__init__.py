"""Loaders copied into exported folders: each runs with transformers, torch, safetensors and numpy only (no tmlib)."""
