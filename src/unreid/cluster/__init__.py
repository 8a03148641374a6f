"""cluster stage of the unreid pipeline."""
