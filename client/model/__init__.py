"""The pFedDC model: a frozen Hugging Face CLIP, global and local prompts, their fusion, local training.

Imports nothing from the daemon or the lab above it.
"""
