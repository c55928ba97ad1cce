"""Training data: build a dataset folder from scores (`notagen data build`) and read it back (`ScoreDataset`)."""
