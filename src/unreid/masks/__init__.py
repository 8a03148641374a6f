"""masks stage of the unreid pipeline."""
