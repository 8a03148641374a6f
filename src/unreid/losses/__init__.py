"""losses stage of the unreid pipeline."""
