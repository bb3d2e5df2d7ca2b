"""The storage catalogue: buckets and their stores, resources, datasets, models."""
