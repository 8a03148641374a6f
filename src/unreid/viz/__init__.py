"""viz stage of the unreid pipeline."""
