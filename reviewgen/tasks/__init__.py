"""The two tasks: the review generator, the review classifier, and the TF-IDF baseline."""
