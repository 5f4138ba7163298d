"""Wing: the chest X-ray investigation (aspect-ratio shortcut, domain shift, importance-weighted validation)."""
