"""The fraud model: one package so training, batch scoring and the API share a single feature and model code path."""
