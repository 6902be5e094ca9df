"""Reading and writing model files: the only place that touches the disk for models."""
