"""The forward pass: padding, positions, KV cache, logits only where needed, generation, likelihood."""
