"""methods stage of the unreid pipeline."""
