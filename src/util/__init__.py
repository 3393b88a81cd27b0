"""What every stage uses: atomic file writes, devices and dtypes, resolving weights by hub id or
folder, image and video helpers, and the safe reader of Lightning checkpoints."""
