"""Convert the JapaneseVowels .ts files into cgru/data/japanese_vowels.npz.

The UEA/UCR-format files are taken from the sktime wheel, which carries them:

    DIR=$(mktemp -d)
    pip download --no-deps -d "$DIR" sktime==1.2.0
    unzip -o "$DIR"/sktime-1.2.0-*.whl 'sktime/datasets/data/JapaneseVowels/*' -d "$DIR"
    python cgru/data/make_japanese_vowels.py "$DIR"/sktime/datasets/data/JapaneseVowels

Only the two .ts files are read; sktime itself is neither imported nor needed.

The .npz holds, per split ("train", "test"):
    x_<split>        float32 (N, 29, 12): the sequences, zero-padded after their end
    lengths_<split>  int64   (N,): the number of recorded frames, 7..29
    y_<split>        int64   (N,): the speaker, 0..8 (the file's labels 1..9 minus one)
"""
import argparse
import os

import numpy as np

MAX_LEN = 29
N_FEATURES = 12


def read_ts(path):
    """Return a list of (T, 12) float arrays and a list of integer labels from a .ts file."""
    sequences, labels = [], []
    in_data = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if line.lower() == "@data":
                    in_data = True
                continue
            *channels, label = line.split(":")
            if len(channels) != N_FEATURES:
                raise ValueError(f"{path}: expected {N_FEATURES} channels, got {len(channels)}")
            seq = np.array([[float(v) for v in ch.split(",")] for ch in channels]).T
            sequences.append(seq)
            labels.append(int(label))
    return sequences, labels


def pad(sequences):
    x = np.zeros((len(sequences), MAX_LEN, N_FEATURES), np.float32)
    lengths = np.array([len(s) for s in sequences], np.int64)
    for i, s in enumerate(sequences):
        x[i, :len(s)] = s
    return x, lengths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder with JapaneseVowels_TRAIN.ts and _TEST.ts")
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(__file__), os.pardir, "cgru", "data", "japanese_vowels.npz"))
    args = parser.parse_args()
    arrays = {}
    for split in ("train", "test"):
        seqs, labels = read_ts(os.path.join(args.folder, f"JapaneseVowels_{split.upper()}.ts"))
        x, lengths = pad(seqs)
        arrays[f"x_{split}"] = x
        arrays[f"lengths_{split}"] = lengths
        arrays[f"y_{split}"] = np.array(labels, np.int64) - 1
        print(f"{split}: {len(seqs)} sequences, lengths {lengths.min()}..{lengths.max()}, "
              f"classes {np.bincount(arrays[f'y_{split}']).tolist()}")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
