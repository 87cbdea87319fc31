"""The C core seen from Python: the model object, training loop, decoding, metrics and configs."""
