"""Model components, one module each."""
