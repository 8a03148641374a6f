"""data stage of the unreid pipeline."""
