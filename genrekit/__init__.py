"""genrekit: music genre classification by transfer learning (Keras 3 on TensorFlow)."""
__version__ = "0.1.0"
