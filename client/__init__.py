"""The pfeddc client: the pFedDC model over a frozen CLIP, private data, local training, the daemon."""
