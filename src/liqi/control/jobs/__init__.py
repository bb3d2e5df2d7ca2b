"""Training jobs: their records, their staging and the runner that drives them."""
