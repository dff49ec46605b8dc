"""Loading: models (offline GGUF packages or the hub), SAEs (shipped, folders, sae-lens releases), data."""
