"""Evaluation metrics: FMD, ACS, label accuracy, BAE/validity, perplexity, memorisation, and `notagen eval`."""
