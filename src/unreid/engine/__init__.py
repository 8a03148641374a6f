"""engine stage of the unreid pipeline."""
