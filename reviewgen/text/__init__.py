"""Text in: the data pipeline (cleaning, labels, splits), tokenizers and the bundled sample."""
