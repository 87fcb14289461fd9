"""`gymwire eval`: a model on a list of environments -> the paper's table, every episode kept."""
