"""Weights to and from PyTorch and Keras. Torch and Keras are imported inside the functions only."""
