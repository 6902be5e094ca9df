"""What fhe-lint computes about a model: exact accumulator bounds per layer, bit-width advice,
ranges observed on calibration data, and Concrete's own word on them (``confirm``)."""
