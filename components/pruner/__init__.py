"""Pruner: fine-tunes a trained Keras model with tfmot pruning (see README.md)."""
