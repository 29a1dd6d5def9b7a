"""Small real data sets shipped with cgru, loaded without any network access.

``load_japanese_vowels`` returns recorded speech features: 12 LPC cepstrum coefficients per
frame, 7 to 29 frames per utterance, nine speakers to tell apart. Source, licence and file
layout: ``cgru/data/README.md``.
"""
import os

import numpy as np

__all__ = ["load_japanese_vowels", "JAPANESE_VOWELS_PUBLISHED_ACCURACY",
           "JAPANESE_VOWELS_REFERENCE"]

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

#: Test accuracy reported for the data set's original method (Kudo, Toyama and Shimbo 1999,
#: passing-through regions), as given in the UCI description of the data set.
JAPANESE_VOWELS_PUBLISHED_ACCURACY = 0.941
JAPANESE_VOWELS_REFERENCE = ("Kudo, Toyama & Shimbo 1999, Pattern Recognition Letters "
                             "20:1103-1111")


def _front_pad(x, lengths):
    """Move each sequence's frames to the end of its row: zeros first, then the frames."""
    out = np.zeros_like(x)
    T = x.shape[1]
    for i, n in enumerate(lengths):
        out[i, T - n:] = x[i, :n]
    return out


def load_japanese_vowels(*, padding="post", return_lengths=False, dtype="float32"):
    """Load the Japanese Vowels speaker-recognition set with its original split.

    Returns ``(x_train, y_train), (x_test, y_test)``: ``x`` is ``(N, 29, 12)`` (batch, time,
    features, as Keras layers expect), zero-padded to 29 frames; ``y`` holds integer speaker
    labels 0..8. The training split has 270 sequences, the test split 370.

    padding : ``"post"`` (frames first, zeros after them, as the lengths describe) or
        ``"pre"`` (zeros first, as Keras' ``pad_sequences`` does by default, so that a
        recurrent layer without masking ends on the last recorded frame).
    return_lengths : also return each sequence's number of frames (int64, 7..29), as
        ``(x_train, y_train, lengths_train), (x_test, y_test, lengths_test)``. The lengths
        count frames from the start of the row for ``"post"`` and from the end for ``"pre"``.
    dtype : float dtype of ``x``.
    """
    if padding not in ("post", "pre"):
        raise ValueError(
            f"Received an invalid value for `padding`, expected 'post' or 'pre'. "
            f"Received: padding={padding!r}")
    with np.load(os.path.join(_DATA_DIR, "japanese_vowels.npz")) as data:
        arrays = {key: data[key] for key in data.files}
    splits = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"].astype(dtype)
        lengths = arrays[f"lengths_{split}"]
        if padding == "pre":
            x = _front_pad(x, lengths)
        y = arrays[f"y_{split}"]
        splits.append((x, y, lengths) if return_lengths else (x, y))
    return tuple(splits)
